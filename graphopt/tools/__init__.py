"""Tools on the IR that every layer above may use: onnxruntime adapters (:mod:`~graphopt.tools.runtime`), model
summaries (:mod:`~graphopt.tools.summary`), structural comparison (:mod:`~graphopt.tools.compare`), benchmarking
(:mod:`~graphopt.tools.bench`), HTML reports (:mod:`~graphopt.tools.report`) and load diagnostics
(:mod:`~graphopt.tools.diagnose`). They import only the IR layer."""
