"""``monitor broker``: run the local Apache Kafka broker (start, stop, status, create-topics, fetch).

``start`` detaches the broker: it keeps running after the command exits, and the data dir's
``broker.json`` records its pid and ports so that ``status``, ``stop`` and ``create-topics``
find it again. ``start --foreground`` instead runs it until Ctrl-C. Exit codes: 0 ok,
1 error (including "already running"), 3 ``status`` found no broker (as LSB init scripts).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from monitor.broker import (
    Broker,
    BrokerConfig,
    BrokerError,
    create_topics,
    default_lib_dir,
    ensure_jars,
    is_serving,
    read_state,
    stop_broker,
)

__all__ = ["add_parser"]

DEFAULT_DATA_DIR = Path("var/kafka")
NOT_RUNNING = 3


def add_parser(subparsers: Any) -> None:
    """Register ``monitor broker`` and its actions."""
    parser = subparsers.add_parser("broker", help="run the local Apache Kafka broker (KRaft, single node)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def data_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help="broker config, data, log and state file (default: %(default)s)")

    start = actions.add_parser("start", help="start a broker (detached unless --foreground)")
    data_dir_option(start)
    start.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    start.add_argument("--port", type=int, default=9092, help="client port, 0 = any free (default: %(default)s)")
    start.add_argument("--controller-port", type=int, default=9093,
                       help="KRaft controller port, 0 = any free (default: %(default)s)")
    start.add_argument("--heap", default="512m", help="JVM max heap (default: %(default)s)")
    start.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the broker to answer (default: %(default)s)")
    start.add_argument("--topics", nargs="*", default=[], metavar="TOPIC",
                       help="topics to create once it runs (existing ones are kept)")
    start.add_argument("--partitions", type=int, default=1, help="partitions of --topics (default: 1)")
    start.add_argument("--reset", action="store_true", help="delete the data dir's topics and offsets first")
    start.add_argument("--foreground", action="store_true", help="run until Ctrl-C instead of detaching")
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker of a data dir (SIGTERM, SIGKILL after 30 s)")
    data_dir_option(stop)
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="say whether a broker runs (exit 3 when not)")
    data_dir_option(status)
    status.set_defaults(func=_status)

    topics = actions.add_parser("create-topics", help="create topics (idempotent)")
    data_dir_option(topics)
    topics.add_argument("names", nargs="+", metavar="TOPIC")
    topics.add_argument("--partitions", type=int, default=1, help="partitions per topic (default: 1)")
    topics.add_argument("--bootstrap", help="host:port (default: the broker running in --data-dir)")
    topics.set_defaults(func=_create_topics)

    fetch = actions.add_parser("fetch", help="resolve the broker jars from Maven Central (once)")
    fetch.add_argument("--lib", type=Path, default=None,
                       help="jar cache dir (default: $MONITOR_KAFKA_LIB or deploy/kafka/lib)")
    fetch.set_defaults(func=_fetch)


def _fail(message: str) -> int:
    print(f"monitor broker: {message}", file=sys.stderr)
    return 1


def _start(args: argparse.Namespace) -> int:
    config = BrokerConfig(data_dir=args.data_dir, host=args.host, port=args.port,
                          controller_port=args.controller_port, heap=args.heap, start_timeout_s=args.timeout)
    if args.reset:
        if read_state(args.data_dir) is not None:
            return _fail("--reset needs the broker stopped first: `monitor broker stop`")
        shutil.rmtree(args.data_dir / "kraft", ignore_errors=True)
    broker = Broker(config, detach=not args.foreground)
    try:
        broker.start()
        if args.topics:
            create_topics(broker.bootstrap, args.topics, args.partitions)
    except BrokerError as exc:
        broker.stop()
        return _fail(str(exc))
    state = broker.state
    assert state is not None
    print(f"Kafka broker running at {state.bootstrap} (pid {state.pid})")
    print(f"  started {state.started_at}, ready in {broker.startup_seconds or 0:.1f} s")
    print(f"  data dir {broker.data_dir}, log {broker.log_file}")
    if args.topics:
        print(f"  topics: {', '.join(args.topics)}")
    if not args.foreground:
        print(f"  stop it with `monitor broker stop --data-dir {args.data_dir}`")
        return 0

    def on_sigterm(*_: object) -> NoReturn:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    print("  running in the foreground: Ctrl-C stops it", flush=True)
    try:
        code = broker.wait()
        return _fail(f"the broker exited with code {code}; see {broker.log_file}") if code else 0
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def _stop(args: argparse.Namespace) -> int:
    state = stop_broker(args.data_dir)
    if state is None:
        print(f"no broker running in {args.data_dir}")
    else:
        print(f"stopped the broker at {state.bootstrap} (pid {state.pid})")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = read_state(args.data_dir)
    if state is None:
        print(f"not running (data dir {args.data_dir})")
        return NOT_RUNNING
    answering = "answering" if is_serving(state.bootstrap, timeout_s=3.0) else "NOT answering"
    print(f"running at {state.bootstrap} (pid {state.pid}, controller port {state.controller_port}, "
          f"started {state.started_at}), {answering}")
    return 0


def _create_topics(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap
    if bootstrap is None:
        state = read_state(args.data_dir)
        if state is None:
            return _fail(f"no broker running in {args.data_dir}; start one or pass --bootstrap")
        bootstrap = state.bootstrap
    try:
        created = set(create_topics(bootstrap, args.names, args.partitions))
    except BrokerError as exc:
        return _fail(str(exc))
    for name in args.names:
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    try:
        lib = ensure_jars(args.lib or default_lib_dir())
    except BrokerError as exc:
        return _fail(str(exc))
    jars = list(lib.glob("*.jar"))
    size = sum(j.stat().st_size for j in jars)
    print(f"{len(jars)} jars, {size / 2**20:.0f} MiB in {lib}")
    return 0
