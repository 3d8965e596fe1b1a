"""Data-parallel training: two worker processes joined by a real torch.distributed (gloo)
group, as Ray Train joins them, each with its share of every step's rows, end where one
worker ends on the same data (loss to float rounding, the same tokens); and a worker's
share of a step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.unit.test_train_loop import ALL_LINEAR, QUESTION, SYSTEM
from train.collective import Collective
from train.loop import LoraSettings, SftRun, TrainSettings

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
WORDS = ("MANGO", "KIWI", "PEAR", "PLUM", "LIME", "FIG", "DATE", "YUZU")
# varied rows: a worker that trained on every row of a step, not its share, would end
# elsewhere; an odd batch gives the second worker fewer rows on some steps
SETTINGS = TrainSettings(epochs=1, learning_rate=1e-2, batch_size=3, max_len=48, seed=7)
LORA = LoraSettings(rank=8, alpha=16, target_modules=ALL_LINEAR)


def test_a_worker_takes_every_world_th_row_from_its_rank():
    rows = list(range(7))
    assert Collective(0, 2).share(rows) == [0, 2, 4, 6]
    assert Collective(1, 2).share(rows) == [1, 3, 5]
    assert Collective(2, 3).share([0, 1]) == []  # a short step: nothing, still in the sum
    assert Collective().share(rows) == rows and Collective().alone
    assert Collective().agree("pause") == "pause"  # alone: its own word


def _worker(rank: int, model: str, data: str, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        workers = Collective.current()
        assert (workers.rank, workers.world) == (rank, 2)
        run = SftRun(model, data, lora=LORA, settings=SETTINGS, device="cpu", collective=workers)
        losses = [run.step()["train_loss"] for _ in range(run.total_steps)]
        stop = workers.agree("cancel" if rank == 0 else None)
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"losses": losses, "summary": run.summary(), "stop": stop})
        )
    finally:
        dist.destroy_process_group()


def test_two_workers_end_where_one_does(tiny_model, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"messages": [SYSTEM, QUESTION, {"role": "assistant", "content": f"It is {w}."}]}
            )
            + "\n"
            for w in WORDS * 2
        )
    )
    alone = SftRun(tiny_model, data, lora=LORA, settings=SETTINGS, device="cpu")
    losses = [alone.step()["train_loss"] for _ in range(alone.total_steps)]

    args = (str(tiny_model), str(data), str(tmp_path / "rendezvous"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the same summed step on both
    assert ranks[0]["losses"] == pytest.approx(losses, rel=1e-4)
    assert ranks[0]["summary"]["trained_tokens"] == alone.trained_tokens
    assert [r["stop"] for r in ranks] == ["cancel", "cancel"]  # the lead's word for all
