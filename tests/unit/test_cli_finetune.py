"""`forge finetune`'s progress line (the commands themselves run against the live
platform in tests/integration/test_finetune_jobs.py)."""

from forge.cli_finetune import progress_line


def test_the_progress_line_shows_step_loss_speed_and_eta() -> None:
    line = progress_line(
        {"step": 12, "total_steps": 32, "train_loss": 2.14321, "tokens_per_s": 3065.2}, 7.4
    )
    assert line == "[#########---------------]    12/32  loss 2.1432  3,065 tok/s  ETA 0:00:07"
    done = progress_line({"step": 32, "total_steps": 32, "valid_loss": 1.5}, None)
    assert done == "[########################]    32/32  val 1.5000"
