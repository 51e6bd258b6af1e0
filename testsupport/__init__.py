"""Support code the conformance and reliability suites share (importable from the repository root).

* :mod:`testsupport.spec_args`: spec data as a framework user passes it (spelled arguments, case learning rates, the
  public object a spec names);
* :mod:`testsupport.torch_adapter` and :mod:`testsupport.keras_adapter`: the one way each suite builds and runs
  a spec object of ``hf_optim_torch`` / ``hf_optim_tf``;
* :mod:`testsupport.results`: what a run returns (lr curves, trajectories);
* :mod:`testsupport.compare`: how results are compared (tolerances, float32 ulps, bit for bit).
"""
