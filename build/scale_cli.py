"""The flags of `estella train` for training at scale: a prepared corpus, mixed precision, data parallelism."""

from .distribute import MODES as DISTRIBUTE_MODES
from .precision import MODES as PRECISION_MODES


def add_scale_arguments(p):
    p.add_argument("--data", default=None, metavar="DATA_DIR", help="a folder written by `estella prepare`, read "
                   "from disk as it trains (instead of --corpus)")
    p.add_argument("--mixed-precision", default=None, choices=PRECISION_MODES,
                   help="16-bit compute with float32 weights; auto: float16 on a GPU, else off (default: off, "
                   "or what a resumed run used)")
    p.add_argument("--distribute", default="none", choices=DISTRIBUTE_MODES,
                   help="data-parallel training: mirrored (the GPUs of this machine) or multi-worker (TF_CONFIG; "
                   "see README) (default: %(default)s)")


def scale_options(args):
    if args.data and args.corpus:
        from estella.runtime.errors import EstellaError
        raise EstellaError("give --data or --corpus, not both")
    return {"data_dir": args.data, "mixed_precision": args.mixed_precision, "distribute": args.distribute}
