"""Rollouts live: the endpoints, and a loop per rollout that gathers the evidence and
carries out the decisions of `gateway.rollout`.

    POST   /admin/models/{m}/rollout   {"version": "2", "steps": [5, 25, 50, 100], "min_step_s": 30,
                                        "min_requests": 200, "guard": {...}, "keep_stable": true}
    GET    /admin/models/{m}/rollout   its state, step, weight, last decision and history
    DELETE /admin/models/{m}/rollout   abort: all traffic back to the stable version

Every decision is a log line ("rollout decision") and counts in
`sluice_rollout_decisions_total{model, decision}`; `sluice_rollout_step{model}` is the
candidate's share in percent while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields
from typing import TYPE_CHECKING

from aiohttp import web

from .admin import _authorized, _json_body
from .codec import error_response
from .loop import BackgroundLoop
from .rollout import Guard, Rollout

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("sluice.rollout")
TICK_S = 0.5


class UnknownModel(Exception):
    pass


class RolloutRunning(Exception):
    pass


class RolloutLoop(BackgroundLoop):
    def __init__(self, gateway: Gateway, rollout: Rollout, tick_s: float = TICK_S) -> None:
        self.gateway, self.rollout, self.tick_s = gateway, rollout, tick_s

    async def weigh(self) -> None:
        """The model's weights as the rollout has them (the candidate's share, the rest to
        stable), here and, through the state store, on every replica."""
        r = self.rollout
        versions = self.gateway.models.get(r.model)
        self.gateway.metrics.rollout_step.labels(r.model).set(r.weight if r.state == "running" else 0.0)
        if versions is None:
            return
        weights = {r.stable: 100.0 - r.weight, r.candidate: r.weight}
        policy = versions.set_traffic({"weights": {v: w for v, w in weights.items() if v in versions.served}})
        await self.gateway.shared.publish(r.model, policy)
        await self.gateway.shared.publish_rollout(r.model, r.to_json())

    def note(self, entry: dict) -> None:
        r = self.rollout
        self.gateway.metrics.rollout_decisions.labels(r.model, entry["decision"]).inc()
        log.info("rollout decision", extra={"model": r.model, "candidate": r.candidate, "stable": r.stable, **entry})

    async def _run(self) -> None:
        r, shared = self.rollout, self.gateway.shared
        try:
            while r.state == "running":
                await asyncio.sleep(self.tick_s)
                await shared.lead(r.model, self.gateway.config.state.leader_lease_s)
                await self._tick()
        finally:
            if r.state != "running":
                await shared.step_down(r.model)

    async def _tick(self) -> None:
        """Gather the evidence since the step began, and carry out what the rollout decides."""
        r = self.rollout
        versions = self.gateway.models.get(r.model)
        stable = versions.served.get(r.stable) if versions else None
        candidate = versions.served.get(r.candidate) if versions else None
        now = time.monotonic()
        if stable is None or candidate is None:  # a version went away: nothing left to compare
            self.note(r.abort(now))
            await self.weigh()
            return
        agreement = None
        if versions.traffic.shadow == r.candidate and versions.shadow_stats.rows:
            agreement = 1 - versions.shadow_stats.top_differs / versions.shadow_stats.rows
        entry = r.decide(now, stable.outcomes.since(r.stable_since()), candidate.outcomes.since(r.step_started), agreement)
        if entry is None:
            return
        self.note(entry)
        if entry["decision"] in ("advance", "promote", "rollback"):
            await self.weigh()
        else:
            await self.gateway.shared.publish_rollout(r.model, r.to_json())
        if entry["decision"] == "promote" and not r.keep_stable:
            await self.gateway.control.unload(r.model, r.stable)


class Rollouts:
    """The gateway's rollouts, at most one running per model."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loops: dict[str, RolloutLoop] = {}

    async def start(self, name: str, body: dict) -> Rollout:
        gateway = self.gateway
        versions = gateway.models.get(name)
        if versions is None:
            raise UnknownModel(f"unknown model {name!r}")
        running = self.loops.get(name)
        if running is not None and running.rollout.state == "running":
            raise RolloutRunning(f"a rollout of version {running.rollout.candidate!r} is running; DELETE it first")
        candidate = body.get("version")
        if not isinstance(candidate, str) or candidate not in versions.served:
            raise ValueError(f"version {candidate!r} is not serving (serving: {', '.join(versions.versions())})")
        stable = body.get("stable") or max(versions.weights, key=lambda v: versions.weights[v], default=None)
        if not isinstance(stable, str) or stable not in versions.served:
            raise ValueError(f"stable version {stable!r} is not serving")
        guard_doc = body.get("guard", {})
        if not isinstance(guard_doc, dict) or set(guard_doc) - {f.name for f in fields(Guard)}:
            raise ValueError(f"guard takes {sorted(f.name for f in fields(Guard))}")
        steps = body.get("steps", [5, 25, 50, 100])
        if not isinstance(steps, list) or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in steps):
            raise ValueError("steps must be a list of percents")
        numbers = {k: body.get(k, d) for k, d in (("min_step_s", 30.0), ("min_requests", 200))}
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers.values()):
            raise ValueError("min_step_s and min_requests must be numbers")
        keep = body.get("keep_stable", True)
        if not isinstance(keep, bool):
            raise ValueError("keep_stable must be true or false")
        try:
            guard = Guard(**guard_doc)
        except TypeError as exc:
            raise ValueError(f"guard: {exc}") from None
        model = versions.served[stable]
        rollout = Rollout(name, candidate, stable, [float(s) for s in steps], float(numbers["min_step_s"]),
                          int(numbers["min_requests"]), model.config.percentile / 100.0, guard, keep,
                          step_started=(now := time.monotonic()), started=now)  # fmt: skip
        if not await gateway.shared.lead(name, gateway.config.state.leader_lease_s):
            raise RolloutRunning(f"another replica leads a rollout of model {name!r}; GET shows it")
        loop = self.loops[name] = RolloutLoop(gateway, rollout)
        await loop.weigh()
        loop.note({"decision": "start", "at": rollout.step_started, "step": 0, "weight": rollout.weight, "reasons": []})
        loop.start()
        return rollout

    async def abort(self, name: str) -> Rollout | None:
        loop = self.loops.get(name)
        if loop is None:
            return None
        await loop.stop()
        if loop.rollout.state == "running":
            loop.note(loop.rollout.abort(time.monotonic()))
            await loop.weigh()
            await self.gateway.shared.step_down(name)
        return loop.rollout

    async def stop(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops.values()), return_exceptions=True)


def add_routes(app: web.Application, gateway: Gateway) -> None:
    rollouts = gateway.rollouts

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = _authorized(gateway.config.admin_token, request)
        if refused is not None:
            return refused
        name = request.match_info["model"]
        try:
            if request.method == "POST":
                rollout = await rollouts.start(name, await _json_body(request))
                return web.json_response(rollout.to_json(), status=201)
            if request.method == "DELETE":
                rollout = await rollouts.abort(name)
            else:
                loop = rollouts.loops.get(name)
                rollout = loop.rollout if loop else None
            if rollout is not None:
                return web.json_response(rollout.to_json())
            elsewhere = await gateway.shared.rollout_state(name)  # led by another replica
            if elsewhere is None:
                return error_response(404, f"no rollout of model {name!r}")
            if request.method == "DELETE" and elsewhere["state"] == "running":
                return error_response(409, f"another replica leads the rollout of model {name!r}: DELETE it there")
            return web.json_response(elsewhere)
        except UnknownModel as exc:
            return error_response(404, str(exc))
        except RolloutRunning as exc:
            return error_response(409, str(exc))
        except ValueError as exc:
            return error_response(400, str(exc))

    for method in ("POST", "GET", "DELETE"):
        app.router.add_route(method, "/admin/models/{model}/rollout", handle)
