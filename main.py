"""Entry point: `python main.py --config=configs/{pretrain,oneshot,ablations}.py[:args] --workdir=DIR [--config.x=y ...]`.

Multi-host: started once per host (or GPU) by a launcher, it joins the job first (mumae_jax/core/distributed.py)."""
from mumae_jax.core import cli

cli.quiet_environment()  # before TensorFlow is imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (configs/<name>.py[:args]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and config.json go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mumae_jax.core import distributed

    distributed.maybe_initialize()  # before any backend use; a no-op unless launched as a multi-process job
    config = flags.FLAGS.config
    if config.trainer == "oneshot":
        from mumae_jax.core import loop
        from mumae_jax.evaluators import episode_accuracy
        from mumae_jax.trainers import oneshot_training

        result = oneshot_training.train_and_evaluate(config, flags.FLAGS.workdir)
        if result["report"]:
            print(episode_accuracy.format_report(result["report"]))
        print(loop.format_summary(result["summary"]))
        print(f"finished at step {result['step']}" + (" (stopped by SIGTERM)" if result["preempted"] else ""))
        return
    if config.trainer == "ablations":
        from mumae_jax.bench import ablations

        print(ablations.run(config, flags.FLAGS.workdir)["table"])
        return
    if config.trainer != "pretrain":
        raise app.UsageError(f"unknown config.trainer {config.trainer!r}")
    from mumae_jax.core import loop
    from mumae_jax.trainers import pretraining

    result = pretraining.train_and_evaluate(config, flags.FLAGS.workdir)
    losses = [r["loss"] for r in result["history"] if "loss" in r]
    # the summary, then the line launchers and scripts read last (launch/local_multiprocess.sh prints it)
    print(loop.format_summary(result["summary"]))
    print(f"finished at step {result['step']}" + (" (stopped by SIGTERM)" if result["preempted"] else "")
          + (f", last logged loss {losses[-1]:.4f}" if losses else ""))


if __name__ == "__main__":
    cli.run_absl(main)
