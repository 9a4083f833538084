// demotrace content script: reports the DOM element behind each action to the service worker.
//
// Runs in every frame (all_frames) of every normal window; never in incognito windows (the
// manifest says "incognito": "not_allowed", and inIncognitoContext is checked again here).
//
// Per action (pointerdown, keyboard-made click, wheel, keydown, focusin, a select's change) it sends one
// message {type: "action", event, t_epoch_ms, element, view, pointer, frame_offset, url, title}:
//   element: tag, role, name (accessible name), id, selector (re-finds the element after a
//            reload; " >>> " steps into an open shadow root or a same-origin iframe), a few
//            attributes, bounds in CSS pixels of this frame's viewport, secret (bool)
//   view:    screenX/screenY/outer*/inner* and devicePixelRatio of this window
//   pointer: screenX/screenY/clientX/clientY of the pointer event (or of the last one in this
//            frame if the window has not moved since): calibrates the viewport origin exactly
// Secret fields (password, autocomplete one-time-code / *-password / cc-*, policy-named) never
// send a value or a key: only that they were focused or acted on (secret: true).
(() => {
  "use strict";
  if (globalThis.__demotraceLoaded) return;
  globalThis.__demotraceLoaded = true;
  if (chrome.extension && chrome.extension.inIncognitoContext) return;

  // WHATWG autofill field names that hold secrets (HTML Living Standard, "Autofill").
  const SECRET_AUTOCOMPLETE = /(^|\s)(current-password|new-password|one-time-code|cc-[a-z-]+)(\s|$)/i;
  let policyAutocomplete = new Set();
  let policyTypes = new Set(["password"]);
  // Field names the default policy treats as secret (privacy/default_policy.toml adds more).
  let secretNamePatterns = [/pass(word|wd|code)/i, /(^|[^a-z])(otp|pin|cvc|cvv|csc)([^a-z]|$)/i,
    /one.?time/i, /security.?code/i];
  const KEPT_ATTRIBUTES = ["id", "name", "type", "role", "aria-label", "data-testid", "placeholder",
    "href", "title", "alt", "autocomplete", "for", "class"];
  const SNAPSHOT_MAX_CHARS = 20000;
  const TEXT_MAX = 120;
  const ids = new WeakMap();
  let nextId = 1;
  let lastPointer = null;
  let lastWheel = 0;
  let lastKeyTarget = null;
  let lastPress = { el: null, t: -1e9 };

  function nodeId(el) {
    // A per-page node number, stable for the page's life (Mind2Web's backend_node_id role).
    let n = ids.get(el);
    if (n === undefined) { n = nextId++; ids.set(el, n); }
    return String(n);
  }

  function applyPolicy(p) {
    // The person's policy (privacy/default_policy.toml [secrets]) adds to the built-in rules.
    if (!p) return false;
    for (const [src, flags] of p.name_patterns || []) {
      try { secretNamePatterns.push(new RegExp(src, flags)); } catch (e) { /* not JS syntax: skipped */ }
    }
    policyAutocomplete = new Set((p.autocomplete || []).map((s) => s.toLowerCase()));
    for (const t of p.types || []) policyTypes.add(t.toLowerCase());
    return true;
  }
  function askPolicy(retries) {
    try {
      chrome.runtime.sendMessage({ type: "get_policy" }).then((p) => {
        if (!applyPolicy(p) && retries > 0) setTimeout(() => askPolicy(retries - 1), 1000);
      }).catch(() => {});
    } catch (e) { /* extension reloaded */ }
  }
  askPolicy(3);

  function isSecret(el) {
    if (!(el instanceof Element)) return false;
    const tag = el.tagName.toLowerCase();
    if (tag !== "input" && tag !== "textarea" && !el.isContentEditable) return false;
    if (tag === "input" && policyTypes.has((el.type || "").toLowerCase())) return true;
    const ac = el.getAttribute("autocomplete") || "";
    if (SECRET_AUTOCOMPLETE.test(ac)) return true;
    if (ac.toLowerCase().split(/\s+/).some((t) => policyAutocomplete.has(t))) return true;
    const names = [el.name, el.id, el.getAttribute("aria-label"), el.getAttribute("placeholder")];
    return names.some((n) => n && secretNamePatterns.some((p) => p.test(n)));
  }

  function clip(s) {
    s = (s || "").replace(/\s+/g, " ").trim();
    return s.length > TEXT_MAX ? s.slice(0, TEXT_MAX) : s;
  }

  function implicitRole(el) {
    const tag = el.tagName.toLowerCase();
    if (tag === "button") return "button";
    if (tag === "a" && el.hasAttribute("href")) return "link";
    if (tag === "select") return el.multiple ? "listbox" : "combobox";
    if (tag === "textarea") return "textbox";
    if (tag === "option") return "option";
    if (tag === "img") return "img";
    if (/^h[1-6]$/.test(tag)) return "heading";
    if (tag === "input") {
      const t = (el.type || "text").toLowerCase();
      return { checkbox: "checkbox", radio: "radio", range: "slider", button: "button", submit: "button",
        reset: "button", search: "searchbox", number: "spinbutton" }[t] || "textbox";
    }
    return null;
  }

  function accessibleName(el) {
    // Simplified accessible-name computation (WAI-ARIA accname 1.2 order): aria-labelledby,
    // aria-label, <label>, alt/title/placeholder, text content.
    const by = el.getAttribute("aria-labelledby");
    if (by) {
      const root = el.getRootNode();
      const txt = by.split(/\s+/).map((i) => root.getElementById ? root.getElementById(i) : null)
        .filter(Boolean).map((n) => n.textContent).join(" ");
      if (clip(txt)) return clip(txt);
    }
    const al = el.getAttribute("aria-label");
    if (al && clip(al)) return clip(al);
    if (el.labels && el.labels.length) return clip(Array.from(el.labels).map((l) => l.textContent).join(" "));
    for (const a of ["alt", "title", "placeholder"]) {
      const v = el.getAttribute(a);
      if (v && clip(v)) return clip(v);
    }
    const tag = el.tagName.toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return null;  // never the value
    return clip(el.textContent) || null;  // textContent: innerText would force a style recalc
  }

  function esc(v) { return CSS.escape(v); }
  function unique(root, sel, el) {
    try {
      const all = root.querySelectorAll(sel);
      return all.length === 1 && all[0] === el;
    } catch (e) { return false; }
  }

  function segment(el) {
    // A CSS selector that matches exactly `el` within its root (document or shadow root).
    // Preference: id, data-testid, name, aria-label; else a short nth-of-type path.
    const root = el.getRootNode();
    const tag = el.tagName.toLowerCase();
    const cands = [];
    if (el.id) cands.push("#" + esc(el.id));
    const tid = el.getAttribute("data-testid");
    if (tid) cands.push(`[data-testid="${esc(tid)}"]`);
    const name = el.getAttribute("name");
    if (name) cands.push(`${tag}[name="${esc(name)}"]`);
    const al = el.getAttribute("aria-label");
    if (al) cands.push(`${tag}[aria-label="${esc(al)}"]`);
    for (const c of cands) if (unique(root, c, el)) return c;
    const parts = [];
    let n = el;
    while (n && n.nodeType === 1) {
      if (n !== el && n.id && unique(root, "#" + esc(n.id), n)) { parts.unshift("#" + esc(n.id)); break; }
      const t = n.tagName.toLowerCase();
      const parent = n.parentElement;
      if (!parent) { parts.unshift(t); break; }
      const same = Array.from(parent.children).filter((c) => c.tagName === n.tagName);
      parts.unshift(same.length > 1 ? `${t}:nth-of-type(${same.indexOf(n) + 1})` : t);
      n = parent;
      const sel = parts.join(" > ");
      if (unique(root, sel, el)) return sel;
    }
    return parts.join(" > ");
  }

  function selectorPath(el) {
    // Segments from the top document down: hosts of open shadow roots and (same-origin)
    // iframe elements, then the element itself; joined with " >>> ".
    const segs = [segment(el)];
    let root = el.getRootNode();
    while (root instanceof ShadowRoot) {
      segs.unshift(segment(root.host));
      root = root.host.getRootNode();
    }
    let crossOrigin = false;
    let w = window;
    while (w !== w.top) {
      let fe = null;
      try { fe = w.frameElement; } catch (e) { fe = null; }
      if (!fe) { crossOrigin = true; break; }
      segs.unshift(segment(fe));
      let r = fe.getRootNode();
      while (r instanceof ShadowRoot) { segs.unshift(segment(r.host)); r = r.host.getRootNode(); }
      w = w.parent;
    }
    return { selector: segs.join(" >>> "), crossOrigin };
  }

  function frameOffset() {
    // This frame's viewport origin in the top viewport, CSS px; null when a parent is
    // cross-origin (then the pointer calibration or nothing tells where it is).
    let x = 0, y = 0, w = window;
    while (w !== w.top) {
      let fe = null;
      try { fe = w.frameElement; } catch (e) { return null; }
      if (!fe) return null;
      const r = fe.getBoundingClientRect();
      const cs = fe.ownerDocument.defaultView.getComputedStyle(fe);
      x += r.left + fe.clientLeft + parseFloat(cs.paddingLeft || "0");
      y += r.top + fe.clientTop + parseFloat(cs.paddingTop || "0");
      w = w.parent;
    }
    return { x, y };
  }

  function describe(el, withValue) {
    const r = el.getBoundingClientRect();
    const secret = isSecret(el);
    const attrs = {};
    for (const a of KEPT_ATTRIBUTES) {
      const v = el.getAttribute(a);
      if (v !== null) attrs[a] = v.length > 200 ? v.slice(0, 200) : v;
    }
    const tag = el.tagName.toLowerCase();
    if ((withValue || tag === "select") && !secret) {
      if (tag === "select") {  // the shown option is on screen anyway: always reported
        const opt = el.selectedOptions && el.selectedOptions[0];
        attrs.value = el.value;
        if (opt) attrs.selected_text = clip(opt.textContent);
      } else if (tag === "input" && (el.type === "checkbox" || el.type === "radio")) {
        attrs.checked = String(el.checked);
      } else if ("value" in el && typeof el.value === "string") {
        attrs.value = el.value.slice(0, 500);
      }
    }
    const path = selectorPath(el);
    return {
      tag, role: el.getAttribute("role") || implicitRole(el), name: secret ? accessibleNameSafe(el) : accessibleName(el),
      id: el.id || null, selector: path.selector, cross_origin_frame: path.crossOrigin,
      attributes: attrs, node_id: nodeId(el), secret,
      bounds: { x: r.left, y: r.top, width: r.width, height: r.height },
    };
  }

  function accessibleNameSafe(el) {
    // For secret fields only labels, never anything the person typed.
    const al = el.getAttribute("aria-label");
    if (al) return clip(al);
    if (el.labels && el.labels.length) return clip(Array.from(el.labels).map((l) => l.textContent).join(" "));
    return clip(el.getAttribute("placeholder")) || null;
  }

  const DROP_TAGS = new Set(["script", "style", "noscript", "template", "link", "meta", "svg", "canvas"]);
  const SNAP_ATTRS = new Set(["id", "name", "type", "role", "aria-label", "data-testid", "placeholder",
    "href", "title", "alt", "for", "class", "autocomplete"]);
  function snapshot() {
    // Cleaned HTML of the top document at action time (Mind2Web's cleaned_html): no scripts or
    // styles, a few attributes, every element numbered with backend_node_id, no form values,
    // no text inside secret fields; cut at SNAPSHOT_MAX_CHARS.
    let out = "";
    function walk(n, depth) {
      if (out.length > SNAPSHOT_MAX_CHARS || depth > 60) return;
      if (n.nodeType === 3) { const t = clip(n.textContent); if (t) out += t.replace(/[<&]/g, (c) => c === "<" ? "&lt;" : "&amp;") + " "; return; }
      if (n.nodeType !== 1) return;
      const tag = n.tagName.toLowerCase();
      if (DROP_TAGS.has(tag)) return;
      let a = ` backend_node_id="${nodeId(n)}"`;
      for (const at of n.attributes) {
        if (SNAP_ATTRS.has(at.name)) a += ` ${at.name}="${at.value.slice(0, 100).replace(/[&"<]/g, (c) => ({ "&": "&amp;", '"': "&quot;", "<": "&lt;" })[c])}"`;
      }
      out += `<${tag}${a}>`;
      if (!isSecret(n) && tag !== "textarea") {
        for (const c of n.childNodes) walk(c, depth + 1);
        if (n.shadowRoot) for (const c of n.shadowRoot.childNodes) walk(c, depth + 1);
      }
      out += `</${tag}>`;
    }
    if (document.body) walk(document.body, 0);
    return out.length > SNAPSHOT_MAX_CHARS ? out.slice(0, SNAPSHOT_MAX_CHARS) : out;
  }

  // The snapshot is built when the page is idle and kept until the DOM changes
  // (MutationObserver), so a press usually finds it ready: it still shows the page before the
  // action, without walking the DOM on the input path (bench/browser_capture.py measured
  // ~12 ms per press for the synchronous walk on a 5 000-element page). A press right after a
  // change builds it there and then.
  let snapCache = "";
  let snapDirty = true;
  let snapPending = false;
  function scheduleSnapshot() {
    if (snapPending || window !== window.top) return;
    snapPending = true;
    setTimeout(() => requestIdleCallback(() => {
      snapPending = false;
      if (snapDirty) { snapCache = snapshot(); snapDirty = false; }
    }, { timeout: 2000 }), 300);
  }
  function currentSnapshot() {
    if (snapDirty) { snapCache = snapshot(); snapDirty = false; }
    return snapCache;
  }
  if (window === window.top) {
    new MutationObserver(() => { snapDirty = true; scheduleSnapshot(); })
      .observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    scheduleSnapshot();
  }

  function view() {
    return { screenX: window.screenX, screenY: window.screenY, outerWidth: window.outerWidth,
      outerHeight: window.outerHeight, innerWidth: window.innerWidth, innerHeight: window.innerHeight,
      dpr: window.devicePixelRatio, top: window === window.top };
  }

  function deepTarget(e) {
    // The innermost element, through open shadow roots (composedPath), else the target.
    const p = e.composedPath ? e.composedPath() : [];
    for (const n of p) if (n instanceof Element) return n;
    return e.target instanceof Element ? e.target : null;
  }

  function send(kind, e, el, extra) {
    // Only the person's own input: events a page script makes (isTrusted false) are not actions.
    if (!el || !e.isTrusted) return;
    const msg = {
      type: "action", event: kind,
      t_epoch_ms: performance.timeOrigin + e.timeStamp,
      element: describe(el, kind === "change"), view: view(), frame_offset: frameOffset(),
      url: location.href, title: document.title, ...extra,
    };
    if ("screenX" in e && "clientX" in e && kind !== "keydown" && kind !== "focusin" && kind !== "change" && !(kind === "click" && e.detail === 0)) {
      lastPointer = { screenX: e.screenX, screenY: e.screenY, clientX: e.clientX, clientY: e.clientY,
        winX: window.screenX, winY: window.screenY };
      msg.pointer = lastPointer;
    } else if (lastPointer && lastPointer.winX === window.screenX && lastPointer.winY === window.screenY) {
      msg.pointer = lastPointer;
    }
    try {
      chrome.runtime.sendMessage(msg).catch(() => {});
    } catch (err) { /* extension reloaded: this page's script is orphaned */ }
  }

  const opts = { capture: true, passive: true };
  window.addEventListener("pointerdown", (e) => {
    if (!e.isPrimary) return;
    const el = deepTarget(e);
    lastPress = { el, t: e.timeStamp };
    if (!e.isTrusted) return;
    send("pointerdown", e, el, window === window.top ? { snapshot: currentSnapshot() } : {});
  }, opts);
  window.addEventListener("click", (e) => {
    if (e.detail === 0) send("click", e, deepTarget(e));  // made by the keyboard (Enter / Space)
  }, opts);
  window.addEventListener("wheel", (e) => {
    if (e.timeStamp - lastWheel < 300) return;  // one report per burst (DESIGN §5 merges ~0.5 s)
    lastWheel = e.timeStamp;
    send("wheel", e, deepTarget(e));
  }, opts);
  window.addEventListener("keydown", (e) => {
    const el = deepTarget(e) || document.activeElement;
    if (el === lastKeyTarget) return;  // once per field (never per key: that would give away lengths)
    lastKeyTarget = el;
    send("keydown", e, el);
  }, opts);
  window.addEventListener("focusin", (e) => {
    lastKeyTarget = null;
    const el = deepTarget(e);
    if (el === lastPress.el && e.timeStamp - lastPress.t < 500) return;  // focus made by that press
    send("focusin", e, el);
  }, opts);
  window.addEventListener("change", (e) => {
    // Selects only (select_option): typed text is recorded from the keys, and a text field's
    // change fires when the next click moves the focus, where it would pose as that click's target.
    const el = deepTarget(e);
    if (el && el.tagName === "SELECT" && !isSecret(el)) send("change", e, el);
  }, opts);
})();
