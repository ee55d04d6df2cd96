"""The ``stmix`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("stmix")


def _her2st(args: argparse.Namespace) -> int:
    import stmix

    adata = stmix.datasets.her2st(args.section, root=args.root)
    stmix.pp.patches(adata, size=args.size, progress=not args.quiet)
    stmix.pp.split(adata, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    print(
        f"{args.section}: {adata.n_obs} spots × {adata.n_vars} genes, patches "
        f"{adata.obsm['stmix_patches'].shape[1:]} -> {out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stmix`` command."""
    parser = argparse.ArgumentParser(
        prog="stmix",
        description="Predict spatial gene expression from H&E images (SNR-ST-Mix) on .h5ad files.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    her2st = commands.add_parser(
        "her2st",
        help="run the whole pipeline on one HER2ST breast cancer section",
        description="Load a HER2ST section (from --root, $STMIX_DATA_DIR/her2st or a download), "
        "cut the H&E patch under every spot, split the spots and write the AnnData.",
    )
    her2st.add_argument("section", nargs="?", default="C2", help="section name, A1 to H3 (C2)")
    her2st.add_argument("--root", default=None, help="folder laid out as the upstream data/")
    her2st.add_argument("--out", default="stmix_output/her2st.h5ad", help="output .h5ad file")
    her2st.add_argument("--size", type=int, default=112, help="patch side in pixels (112)")
    her2st.add_argument("--seed", type=int, default=0, help="seed of the split (0)")
    her2st.add_argument("--quiet", action="store_true", help="no progress bars")
    her2st.set_defaults(run=_her2st)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stmix`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"stmix {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
