#!/usr/bin/env python3
"""A Python grpcio sync server that does nothing: what a user might pick instead of loopd.

Serves loopd.v1.SchedulerService on a Unix socket; CallLater answers at once with an
empty response, every other RPC is UNIMPLEMENTED (grpcio's default). The stubs are
generated from proto/loopd/v1/*.proto with grpc_tools.protoc (the grpcio-tools package,
which carries the well-known types) into a temp dir at start-up.

    bench/.venv/bin/python bench/grpcio_server.py /tmp/grpcio.sock [--workers 16]

Runs until SIGTERM or SIGINT. A Python *client* on a unix: target must set the channel
option grpc.default_authority (e.g. "localhost"); this server needs nothing of the kind.
"""

import argparse
import glob
import importlib
import os
import signal
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate_stubs(out_dir):
    """Compiles loopd/v1/*.proto into out_dir and puts it on sys.path."""
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos = sorted(glob.glob(os.path.join(PROTO_DIR, "loopd", "v1", "*.proto")))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        sys.exit("grpc_tools.protoc failed on proto/loopd/v1/*.proto")
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="Unix socket path to listen on")
    parser.add_argument("--workers", type=int, default=16,
                        help="ThreadPoolExecutor threads (default 16)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loopd-grpcio-") as out_dir:
        generate_stubs(out_dir)
        pb = importlib.import_module("loopd.v1.scheduler_pb2")
        pb_grpc = importlib.import_module("loopd.v1.scheduler_pb2_grpc")

        class NoOpScheduler(pb_grpc.SchedulerServiceServicer):
            def CallLater(self, request, context):
                return pb.CallLaterResponse()

        if os.path.exists(args.path):
            os.unlink(args.path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
        pb_grpc.add_SchedulerServiceServicer_to_server(NoOpScheduler(), server)
        server.add_insecure_port(f"unix:{args.path}")
        server.start()

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        server.stop(grace=None)


if __name__ == "__main__":
    main()
