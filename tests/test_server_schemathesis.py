"""Schemathesis against the collector's OpenAPI document: generated requests to every
operation — sent with a credential of the role the operation admits, so they reach the route's
own logic — never get a server error (5xx)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from conftest_pg import make_stack
from hypothesis import HealthCheck, given, settings

from demotrace.server.app import route_roles


def test_no_server_error_on_any_operation(tmp_path: Path) -> None:
    st = make_stack(tmp_path / "srv", f"sqlite:///{tmp_path / 'api.db'}", rate_per_s=1e6,
                    rate_burst=10**6)
    try:
        roles_of = route_roles(st.app)
        tokens = {r: st.token(r, "fuzz@example.org" if r in ("device", "person") else None)
                  for r in ("device", "person", "curator", "admin", "auditor")}
        erase_token = st.token("person", "other@example.org")
        schema = schemathesis.openapi.from_asgi("/openapi.json", st.app)
        ops = [r.ok() for r in schema.get_all_operations()]
        assert len(ops) == len([k for k in roles_of if k[1] not in ("/openapi.json", "/docs",
                                                                     "/docs/oauth2-redirect",
                                                                     "/redoc")])
        failures: list[str] = []
        for op in ops:
            roles = roles_of[(op.method.upper(), op.path)]
            headers = {"authorization": f"Bearer {tokens[roles[0]]}"} if roles else {}
            if op.path in ("/v1/me/erase", "/portal/erase"):
                headers = {"authorization": f"Bearer {erase_token}"}

            @given(case=op.as_strategy())
            @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                resp = case.call(headers=headers)
                if resp.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {resp.status_code} "
                                    f"{resp.text[:200]}")

            run()
        assert not failures, "\n".join(failures[:20])
    finally:
        st.client.close()
        st.collector.close()
