"""latentjax.train: the one training machinery every experiment family uses.

- `experiment.Experiment`: what a builder `(config, mesh) -> Experiment` returns (registry.register / get).
- `loop.train(config, experiment, mesh, workdir)`: resume-or-init, jitted steps, metrics, eval, checkpoints.
- `step.make_train_step(...)`, `state.state_shardings / init_state`, `optimizer.make_optimizer`: the pieces, for
  code that drives steps itself (tests, benchmarks).
- `launch/train.py --config=configs/<file>.py --workdir=DIR`: the command line.
"""
