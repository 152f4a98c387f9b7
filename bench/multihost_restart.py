"""Rolling restarts across hosts: failed requests with lossless offline on, and off (the anchor).

Every pod is a Linux network namespace with its own IP on a bridge (`tests.support.netns`;
needs root): a control plane, a `checkout` consumer and 2 `orders` instances, each started
with exactly the env and preStop that the admission webhook's patch gave its pod. An
open-loop load (RATE req/s) from a client namespace goes to checkout, which calls
`http://orders/who` by name; meanwhile every orders instance is replaced in turn as a
Kubernetes rolling update does (maxSurge 1): a new pod starts, its readiness probe (the
agent's /ready) passes, then the old pod gets the injected preStop (`python -m tidegate
offline`) and SIGTERM. Rounds: lossless on; lossless off (TIDEGATE_LOSSLESS=off in the
app's env: the preStop then fails, as it would, and SIGTERM stops the server at once), with a
checkout that lists orders' instances from the control plane every 30 s and round-robins over
them, as Ribbon does by default — the anchor, as in bench/rolling_restart.py: what consumers
without a push have. (With the agent's routing, even lossless off deregisters before the
listener closes and pushes that to consumers within milliseconds: 0 failed in 6 restarts.)

A deleted pod's network goes `--network-linger` seconds after its server exits (default
3: a sandbox's teardown follows its containers'); `--network-linger 0` removes it at once,
so packets still sent to the old address go nowhere.

`cross_host_notice_*_ms`: from the preStop's start to the last request that reached the
old instance, i.e. how soon the consumer on another host stopped choosing it (whichever
channel told it first: the control plane's push, the direct notice, the response header).

Run: `sudo .venv/bin/python bench/multihost_restart.py` (`--restarts 20 --rate 200` by
default; about 3 minutes on 2 cores). The last line is one JSON object: {"sent",
"failed_lossless_on", "failed_lossless_off", "cross_host_notice_p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support, tests.k8s

from tests.k8s.multihost import NETWORK_LINGER_S, Governed, MultiHost  # noqa: E402
from tests.support.netns import available  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def round_(workdir: Path, restarts: int, rate: float, lossless: bool, linger: float) -> dict[str, object]:
    workdir.mkdir(parents=True)
    hosts = MultiHost(workdir)
    app_env = {} if lossless else {"TIDEGATE_LOSSLESS": "off"}
    notices: list[float] = []
    try:
        serial = 0

        def orders() -> Governed:
            nonlocal serial
            serial += 1
            name = f"orders-{serial}"
            return hosts.start(name, "orders", "orders", app_env={**app_env, "LAST_FILE": str(workdir / f"{name}.last")})

        checkout = hosts.start("checkout", "checkout" if lossless else "checkout_ribbon", "checkout", app_env=app_env)
        live = [orders(), orders()]
        for governed in [checkout, *live]:
            hosts.wait_ready(governed)
        load = hosts.load(checkout.url + "/", rate, "on" if lossless else "off")
        time.sleep(2)
        for turn in range(restarts):
            old = live[turn % 2]
            new = orders()
            hosts.wait_ready(new)
            began = time.time()
            hosts.terminate(old, network_linger_s=linger)
            last = workdir / f"{old.name}.last"
            if last.exists():
                notices.append(max(0.0, float(last.read_text()) - began) * 1000)
            live[turn % 2] = new
        time.sleep(1)
        result = hosts.finish(load)
    finally:
        hosts.close()
    return {"sent": result["sent"], "failed": result["failed"], "errors": result["errors"], "notice_ms": notices}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--restarts", type=int, default=20, help="restarts with lossless on (default 20)")
    parser.add_argument("--off-restarts", type=int, default=6, help="restarts with lossless off, the anchor (default 6)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument(
        "--network-linger",
        type=float,
        default=NETWORK_LINGER_S,
        help=f"seconds a deleted pod's network outlives its exit (default {NETWORK_LINGER_S}; 0: at once)",
    )
    args = parser.parse_args()
    why = available()
    if why:
        print(f"multihost_restart: cannot run: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tidegate-multihost-") as folder:
        on = round_(Path(folder) / "on", args.restarts, args.rate, lossless=True, linger=args.network_linger)
        print(f"lossless on:  {args.restarts} restarts, sent {on['sent']}, failed {on['failed']} {on['errors']}", flush=True)
        off = round_(Path(folder) / "off", args.off_restarts, args.rate, lossless=False, linger=args.network_linger)
        print(
            f"lossless off: {args.off_restarts} restarts, sent {off['sent']}, failed {off['failed']} (the anchor) {off['errors'][:2]}",
            flush=True,
        )
    notice = list(on["notice_ms"])  # type: ignore[call-overload]
    failed_off_per_restart = int(off["failed"]) / max(1, args.off_restarts)  # type: ignore[call-overload]
    failed_on_per_restart = int(on["failed"]) / max(1, args.restarts)  # type: ignore[call-overload]
    summary = {
        "sent": int(on["sent"]) + int(off["sent"]),  # type: ignore[call-overload]
        "restarts_lossless_on": args.restarts,
        "restarts_lossless_off": args.off_restarts,
        "rate": args.rate,
        "network_linger_s": args.network_linger,
        "failed_lossless_on": on["failed"],
        "failed_lossless_off": off["failed"],
        "failed_per_restart_on_vs_off": round(failed_on_per_restart / failed_off_per_restart, 4) if failed_off_per_restart else None,
        "cross_host_notice_p50_ms": round(percentile(notice, 0.5), 1),
        "cross_host_notice_p99_ms": round(percentile(notice, 0.99), 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
