"""Pass infrastructure: the pass contract and registry (:mod:`~graphopt.engine.passes_api`) and the PassManager that
runs pipelines to a fixed point with statistics, checks and numeric verification
(:mod:`~graphopt.engine.pass_manager`). The pattern-rule engine built on it is the public :mod:`graphopt.patterns`."""
