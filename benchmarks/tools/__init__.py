"""The repository's benchmark tool, on top of the package's ``napari-sslseg bench``: the data sets of
../shared/data (presets), the speed, memory and viewer-latency probes, and the project's targets.

    python -m benchmarks.tools.bench --dataset colin27 --quick --out benchmarks/colin27-whole-quick

Run from the repository root; nothing in the plugin imports it.
"""
