"""A bounded load test of the check service on the loopback address.

Many readers at once, each: ``POST /tokens`` once, then in a loop
``POST /cases`` for one A1 part, answer the cases with the reference
solution's functions (locally, as a reader's notebook would), and
``POST /answers``. A request that fails because the service is down is
retried with the same case id, so a restart neither loses an acknowledged
attempt nor, thanks to one attempt per case, records one twice.

Used by ``benchmarks/check_service_load.py`` (the numbers) and by
``tests/test_check_service.py`` (the restart).
"""
import asyncio
import statistics
import time

import httpx

from bnref.checking import codec, driver

# Parts whose contract bnref.functional meets as it is (Part 1's cache has keys of its own).
PARTS = ("bn_forward_test", "bn_backward", "bn_backward_alt", "spatial_bn_forward", "ln_forward", "ln_backward")


def solution_namespace():
    """A1's reference functions under the names the assignment gives."""
    import bnref.functional as F

    return {"batchnorm_forward": F.batchnorm_forward, "batchnorm_backward": F.batchnorm_backward,
            "batchnorm_backward_alt": F.batchnorm_backward_alt, "layernorm_forward": F.layernorm_forward,
            "layernorm_backward": F.layernorm_backward,
            "spatial_batchnorm_forward": F.spatial_batchnorm_forward,
            "spatial_batchnorm_backward": F.spatial_batchnorm_backward}


async def _post(client, path, body, stats, deadline):
    """POST until it gets an answer (the service may be restarting); None past the deadline."""
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            response = await client.post(path, json=body)
        except httpx.TransportError:
            stats["transport_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        if response.status_code >= 500 or response.status_code == 429:
            stats["http_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        if path == "/answers":
            stats["latencies"].append(time.perf_counter() - start)
        return response
    return None


async def _reader(url, index, stats, stop_at, deadline, namespace):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await _post(client, "/tokens", None, stats, deadline)
        if response is None:
            return
        token = response.json()["token"]
        turn = 0
        while time.monotonic() < stop_at:
            part = PARTS[(index + turn) % len(PARTS)]
            turn += 1
            response = await _post(client, "/cases", {"token": token, "assignment": "a1_batchnorm_numpy",
                                                      "part": part}, stats, deadline)
            if response is None:
                return
            case = response.json()
            results = driver.run(namespace, codec.decode(case["request"]))
            body = {"token": token, "case_id": case["case_id"], "results": results}
            stats["sent"].add(case["case_id"])
            response = await _post(client, "/answers", body, stats, deadline)
            if response is None:
                return
            verdict = response.json()
            if response.status_code != 200 or not verdict.get("passed"):
                stats["wrong"].append((part, response.status_code, verdict))
            stats["acknowledged"][case["case_id"]] = verdict


async def _run(url, readers, seconds, during=None):
    stats = {"latencies": [], "transport_errors": 0, "http_errors": 0, "wrong": [], "sent": set(),
             "acknowledged": {}}
    namespace = solution_namespace()
    start = time.monotonic()
    stop_at, deadline = start + seconds, start + seconds + 120
    tasks = [asyncio.create_task(_reader(url, i, stats, stop_at, deadline, namespace)) for i in range(readers)]
    if during is not None:
        await during(stats)
    await asyncio.gather(*tasks)
    stats["elapsed"] = time.monotonic() - start
    return stats


def run(url, readers=32, seconds=20.0, during=None):
    """Run the load; ``during(stats)`` is an async callback run alongside (a restart)."""
    return asyncio.run(_run(url, readers, seconds, during))


def summary(stats):
    latencies = sorted(stats["latencies"])
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"answers": len(stats["acknowledged"]), "seconds": round(stats["elapsed"], 2),
            "answers_per_second": round(len(stats["acknowledged"]) / stats["elapsed"], 1),
            "p50_ms": round(1000 * q[49], 1), "p99_ms": round(1000 * q[98], 1),
            "transport_errors": stats["transport_errors"], "http_errors": stats["http_errors"],
            "wrong_verdicts": len(stats["wrong"])}
