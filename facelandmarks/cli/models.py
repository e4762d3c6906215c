"""The toolkit's landmark models."""

from __future__ import annotations

import json

from facelandmarks import runtime
from facelandmarks.cli.common import USER_ERRORS, OneLineParser, complain, error_line, script_main, stopped


def build_parser() -> OneLineParser:
    """``models.py``'s flags; parsing them needs no Keras (the registry is read after)."""
    parser = OneLineParser(
        prog="models.py",
        description="The toolkit's landmark models. Use a NAME with train.py; see docs/models.md.",
        epilog="models.py --list names every model with its input, size, description and options (as JSON for "
               "train.py --model-options). Its 'from' column is where the design comes from: a section of the "
               "reports the toolkit was designed from ('seed 000 3.2.1'; 000 the primary one), a paper, or 'ours'.",
    )
    parser.add_argument("--list", action="store_true", help="print name, parameters, input, description and options of every model")
    parser.add_argument("--summary", metavar="NAME", help="print the layer summary of one model")
    parser.add_argument("--num-points", type=int, metavar="K", help="landmarks K for --list / --summary (default 68)")
    parser.add_argument("--input-size", type=int, metavar="S", help="image side for --summary (default: the model's)")
    parser.add_argument("--plugins", metavar="A,B,...", type=runtime.comma_list,
                        default=[], help="your own .py files or modules registering model families (docs/models.md), "
                        "listed with the toolkit's by --list and --summary (FACELANDMARKS_PLUGINS adds to them)")
    parser.add_argument("--verbose", action="store_true", help="show the backend's start-up log lines")
    parser.add_argument("--ship", metavar="RUN_DIR", help="write RUN_DIR's best weights (float16), settings and "
                        "history.csv into --to, a folder that loads like a run; the model there is replaced whole (its "
                        "MODEL_CARD.md stays) and only by one of the same scheme. weights/ holds the shipped model: one "
                        "folder, at most 8 MiB")
    parser.add_argument("--to", metavar="FOLDER", help="destination of --ship, e.g. weights/NAME")
    return parser


@script_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ship and not args.to:
        parser.error("--ship needs --to FOLDER")
    if args.to and not args.ship:  # it printed the help and exited 0, shipping nothing
        parser.error("--to FOLDER goes with --ship RUN_DIR (the run to ship)")
    if args.ship and (args.list or args.summary or args.num_points is not None):  # they were ignored in silence
        parser.error("--ship RUN_DIR --to FOLDER goes alone, not with --list, --summary or --num-points")
    if args.input_size is not None and not args.summary:
        parser.error("--input-size goes with --summary NAME")
    for flag, value in (("--num-points", args.num_points), ("--input-size", args.input_size)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    num_points = 68 if args.num_points is None else args.num_points
    if not (args.list or args.summary or args.ship):
        parser.print_help()
        return 0
    runtime.startup(args.verbose)  # Keras loads here, quietly: the registry builds models
    from facelandmarks.models import IMAGE, REGISTRY, build_model, describe_models, get_spec
    from facelandmarks.models.plugins import load_plugins
    from facelandmarks.models.registry import shapes_only

    try:
        load_plugins(args.plugins)
    except USER_ERRORS as err:
        complain(f"models.py: {error_line(err)}")
        return 2
    if args.summary and args.summary not in REGISTRY:
        parser.error(f"--summary: {args.summary!r} is not a model; choose from {', '.join(REGISTRY)}")
    if args.ship:
        from facelandmarks.inference.ship import ship

        try:
            print(f"shipped {args.ship} -> {ship(args.ship, args.to)}")
        except USER_ERRORS as err:
            complain(f"models.py: {error_line(err)}")
            return 2
        except KeyboardInterrupt as err:
            from facelandmarks.inference.swap import was_replaced

            word, status = stopped(err)
            if was_replaced(err):  # it said 'left as it was' of a folder that held the new model
                complain(f"\nmodels.py: {word} while deleting the model it replaced; {args.to} holds {args.ship}'s "
                         "(what is left of the old one goes at the next --ship)")
            else:
                complain(f"\nmodels.py: {word}; {args.to} left as it was")
            return status
        return 0
    if args.list:
        rows = describe_models(num_points, progress=True)
        width = max(20, *(len(row["source"]) for row in rows))  # a long origin keeps the columns straight
        print(f"{'model':<22} {'input':<16} {'params':>12}  {'from':<{width}} description")
        for row in rows:
            print(f"{row['name']:<22} {row['input']:<16} {row['params']:>12,}  {row['source']:<{width}} {row['description']}")
            print(f"{'':<22} options (--model-options): {json.dumps(row['options'])}")
    if args.summary:
        spec = get_spec(args.summary)
        shape = spec.default_input_shape
        if args.input_size is not None and spec.input_kind != IMAGE:  # it was ignored in silence
            parser.error(f"--input-size: {args.summary} takes {spec.input_kind} of shape {shape}, not images")
        if args.input_size is not None:
            shape = (args.input_size, args.input_size, shape[2])
        try:
            with shapes_only():  # no weights to initialise: the layers' shapes and counts are the summary
                build_model(args.summary, shape, num_points).summary(expand_nested=False)
        except ValueError as err:  # an input too small for the model
            complain(f"models.py: --summary {args.summary}: {error_line(err)}")
            return 2
    return 0
