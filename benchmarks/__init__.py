"""This repository's benchmark runs: their results (one folder per run) and the tool that makes them (tools/)."""
