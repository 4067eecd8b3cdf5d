"""`estella export`."""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="export a run as SavedModel, TFLite and ONNX step graphs with a manifest",
        description="Rebuild the step model from a run's best weights, write every artifact of export/FORMAT.md, "
                    "and check each one against the Keras reference before the folder appears.")
    p.add_argument("run_dir", help="a run directory written by `estella train`")
    p.add_argument("--out", default=None, help="the export folder to write (default: RUN/export)")
    p.add_argument("--force", action="store_true", help="replace an existing estella export at --out")
    p.set_defaults(handler=run_export)


def run_export(args):
    from .pipeline import export_run

    export_run(args.run_dir, args.out, force=args.force)
