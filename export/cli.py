"""`estella export`. The checks on the run folder and --out are answered before TensorFlow is imported."""

import os
import warnings


def add_parser(subparsers):
    from .manifest import PRECISIONS

    p = subparsers.add_parser(
        "export", help="export a run as SavedModel, TFLite and ONNX step graphs with a manifest",
        description="Rebuild the step model from a run's best weights, write every artifact of export/FORMAT.md, "
                    "and check each one against the Keras reference before the folder appears.")
    p.add_argument("run_dir", help="a run directory written by `estella train`")
    p.add_argument("--out", default=None, help="the export folder to write (default: RUN/export)")
    p.add_argument("--force", action="store_true", help="replace an existing estella export at --out")
    p.add_argument("--precision", default="all", choices=PRECISIONS,
                   help="all (default), or float32: the float artifacts alone, for a run whose int8 artifacts are "
                        "not wanted or do not pass the parity gate (the gate itself is the same)")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's, LiteRT's and ONNX Runtime's own log lines")
    p.set_defaults(handler=run_export)


def run_export(args):
    from estella.runtime.quiet import library_logs_filtered, show_library_logs

    from .folders import check_run_dir, check_target, check_writable, default_out

    out_dir = os.path.abspath(args.out or default_out(args.run_dir))
    check_run_dir(args.run_dir)
    check_target(out_dir, args.force)
    check_writable(out_dir)
    if args.verbose:
        show_library_logs()
    else:  # TensorFlow's own Python warnings (tf.lite.Interpreter's deprecation, ...) are its chatter too
        warnings.filterwarnings("ignore", module=r"tensorflow\.")
    with library_logs_filtered():  # held until the export ends; its progress goes to stdout meanwhile
        from .pipeline import export_run  # TensorFlow: only once the cheap checks have passed

        export_run(args.run_dir, args.out, force=args.force, precision=args.precision)
