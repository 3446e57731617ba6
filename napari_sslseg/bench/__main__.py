import argparse
import sys

from . import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m napari_sslseg.bench", description=(__package__ or "").strip())
add_arguments(parser)
sys.exit(run(parser.parse_args()))
