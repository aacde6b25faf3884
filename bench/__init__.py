"""FrameLedger benchmarks. `python -m bench` runs every `bench/*_bench.py` (each has `main(argv)`);
`python -m bench NAME ...` runs only those (e.g. `python -m bench extract`). Results are printed as
tables and written to bench/results/<name>.json."""
