"""``bench serve --profile``: py-spy's raw stacks put under the request path's steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dermaops.errors import ConfigError
from dermaops.serving import profile
from dermaops.serving.profile import LOOP, ProfileError, summary

LOOP_FRAMES = "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (events.py:80)"
WORKER = "Thread.run (threading.py:982);_worker (thread.py:83);_WorkItem.run (thread.py:58)"
ANSWER = "decode_and_answer (serving/model.py:220)"


def line(thread: str, frames: str, count: int) -> str:
    return f"thread (1): {thread};{frames} {count}"


RAW = "\n".join([
    # the loop waiting for a socket, an idle worker, the records thread between batches
    line("MainThread", "BaseEventLoop._run_once (b.py:1);EpollSelector.select (s.py:2)", 900),
    line("dermaops_0", WORKER, 700),
    line("dermaops-records", "Recorder._run (r.py:1);Queue.get (q.py:2);Condition.wait (t.py:3)",
         800),
    # the loop's own work: routing, middleware, HTTP
    line("MainThread", f"{LOOP_FRAMES};Router.__call__ (routing.py:1)", 20),
    # the answer: postprocess inside the loop's callback (innermost step wins over the loop)
    line("MainThread", f"{LOOP_FRAMES};DermaOpsModel.postprocess (model.py:1);"
         "BaseModel.model_dump (main.py:1)", 5),
    # decode, forward (its native run under it) and scoring on a worker, in one hop
    line("dermaops_1", f"{WORKER};{ANSWER};DermaOpsModel._seen (model.py:2);decode (i.py:3)", 10),
    line("dermaops_1", f"{WORKER};{ANSWER};OnnxBackend.__call__ (b.py:1);Session.run (o.py:2)",
         50),
    line("dermaops_1", f"{WORKER};{ANSWER};DermaOpsModel._score (model.py:3);"
         "OodGuard.scores (g.py:1)", 5),
    # statistics inside the records step count as statistics; the rest as records
    line("dermaops-records", "Recorder._record (r.py:5);image_stats (f.py:1);_mean (m.py:2)", 15),
    line("dermaops-records", "Recorder._record (r.py:5);InferenceLog.write (l.py:1)", 5),
    # the worker handing its result back to the loop
    line("dermaops_1", f"{WORKER};Future.set_result (f.py:1);"
         "BaseSelectorEventLoop._write_to_self (s.py:1)", 4),
    # a thread of no step (a library's own), not the loop: left out
    line("Thread-3", "Thread.run (threading.py:982);poll (x.py:1)", 300),
])  # fmt: skip


def test_each_sample_goes_to_its_innermost_step_and_waiting_is_left_out() -> None:
    found = summary(RAW, requests=10, rate_hz=250)
    per_sample = 1000 / 250 / 10  # 0.4 ms of a thread per request for each sample
    assert found["ms_per_request"] == {
        "decode": pytest.approx(10 * per_sample),
        "forward": pytest.approx(50 * per_sample),
        "scoring": pytest.approx(5 * per_sample),
        "thread hand-offs": pytest.approx(4 * per_sample),
        "answer": pytest.approx(5 * per_sample),
        "statistics": pytest.approx(15 * per_sample),
        "records": pytest.approx(5 * per_sample),
        LOOP: pytest.approx(20 * per_sample),
    }
    assert found["share"]["forward"] == pytest.approx(50 / 114, abs=1e-3)
    assert sum(found["share"].values()) == pytest.approx(1, abs=0.01)


def test_no_py_spy_is_said_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(ConfigError, match="pip install py-spy"):
        profile.py_spy()


def test_a_process_py_spy_cannot_sample_is_refused_before_any_request(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    sent: list[int] = []

    def send(n: int) -> dict[str, float]:
        sent.append(n)
        return {"p50_ms": 1.0}

    with pytest.raises(ProfileError, match=f"could not sample pid {gone.pid}"):
        profile.profiled(gone.pid, 10, send)
    assert sent == []
