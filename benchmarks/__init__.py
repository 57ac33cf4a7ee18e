"""``python -m benchmarks``: the broker's performance figures, each beside a baseline measured in the same run.

Every suite is a module with a ``run(ctx: RunContext) -> list[Figure]`` function listed in
:data:`benchmarks.__main__.SUITES`; the CLI runs them, prints one table (:mod:`benchmarks.report`)
headed by the machine description (:mod:`benchmarks.machine`) and optionally writes JSON.
Suites share one offline stack (:mod:`benchmarks.stack`), started only if a suite asks for it.
"""
