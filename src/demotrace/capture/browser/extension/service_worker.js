// demotrace service worker: forwards content-script reports and tab / navigation changes to
// the local demotrace native host (Chrome native messaging; no network, no open port).
//
// Adds to each report: the tab's page zoom factor (chrome.tabs.getZoom; content scripts cannot
// read it) and the frame id. Incognito tabs are ignored (the manifest already keeps the
// extension out of incognito windows: "incognito": "not_allowed").
"use strict";

const HOST = "org.demotrace.browser";
let port = null;
let recording = false;  // the host's last word: is a recorder receiving our reports?
let policy = null;  // the person's secret-field rules, from the host (privacy policy)
let retryAt = 0;
const zoomByTab = new Map();
let chain = Promise.resolve();  // keeps reports in arrival order across async look-ups

function connect() {
  if (port || Date.now() < retryAt) return port;
  try {
    port = chrome.runtime.connectNative(HOST);
    port.onMessage.addListener((m) => {
      if (m && m.type === "status") recording = !!m.recording;
      if (m && m.type === "policy") policy = m;
    });
    port.postMessage({ type: "hello" });
    port.onDisconnect.addListener(() => {
      recording = false;
      // the host exits when it cannot run; retry at most every 2 s
      void chrome.runtime.lastError;
      port = null;
      retryAt = Date.now() + 2000;
    });
  } catch (e) {
    port = null;
    retryAt = Date.now() + 2000;
  }
  return port;
}

function post(msg) {
  const p = connect();
  if (!p) return;
  try { p.postMessage(msg); } catch (e) { port = null; }
}

async function zoomOf(tabId) {
  if (zoomByTab.has(tabId)) return zoomByTab.get(tabId);
  let z = 1;
  try { z = await chrome.tabs.getZoom(tabId); } catch (e) { z = 1; }
  zoomByTab.set(tabId, z);
  return z;
}

chrome.tabs.onZoomChange.addListener((info) => zoomByTab.set(info.tabId, info.newZoomFactor));
chrome.tabs.onRemoved.addListener((tabId) => zoomByTab.delete(tabId));

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg && msg.type === "get_policy") { connect(); sendResponse(policy); return; }
  if (!sender.tab || sender.tab.incognito || !msg || msg.type !== "action") return;
  const tab = sender.tab;
  chain = chain.then(async () => {
    msg.zoom = await zoomOf(tab.id);
    msg.tab_id = tab.id;
    msg.window_id = tab.windowId;
    msg.frame_id = sender.frameId;
    post(msg);
  });
});

async function reportTab(tabId, reason) {
  let tab;
  try { tab = await chrome.tabs.get(tabId); } catch (e) { return; }
  if (!tab || tab.incognito || !tab.active) return;
  let win = null;
  try { win = await chrome.windows.get(tab.windowId); } catch (e) { win = null; }
  if (win && win.incognito) return;
  post({
    type: "navigation", reason, t_epoch_ms: Date.now(), url: tab.url || null, title: tab.title || null,
    tab_id: tab.id, window_id: tab.windowId, zoom: await zoomOf(tab.id),
    window: win ? { left: win.left, top: win.top, width: win.width, height: win.height, focused: win.focused } : null,
  });
}

chrome.tabs.onActivated.addListener((info) => { chain = chain.then(() => reportTab(info.tabId, "tab_switch")); });
chrome.tabs.onUpdated.addListener((tabId, change) => {
  // URL changes include history.pushState navigations of single-page apps.
  if (change.url || change.title) chain = chain.then(() => reportTab(tabId, change.url ? "navigation" : "title"));
});
chrome.windows.onFocusChanged.addListener(async (windowId) => {
  if (windowId === chrome.windows.WINDOW_ID_NONE) return;
  try {
    const [tab] = await chrome.tabs.query({ active: true, windowId });
    if (tab) chain = chain.then(() => reportTab(tab.id, "window_focus"));
  } catch (e) { /* window closed */ }
});

connect();
