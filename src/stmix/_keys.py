"""Every AnnData key that stmix reads or writes, in one place.

Each function that writes one of these takes a ``key_added`` (or ``layer``) argument, so the
names below are only the defaults.
"""

# input, scanpy / squidpy convention
SPATIAL = "spatial"  # obsm: spot centres in full-resolution pixels (x, y); uns: images

# pp
SPLIT = "stmix_split"  # obs: categorical train / val / test
SPLIT_CATEGORIES = ("train", "val", "test")
PATCHES = "stmix_patches"  # obsm: uint8 (n_obs, size, size, 3)
PATCHES_PARAMS = "stmix_patches"  # uns: {"params": {...}} of pp.patches
NEIGHBORS = "stmix"  # prefix: obsp[f"{NEIGHBORS}_connectivities"], obsp[f"{NEIGHBORS}_weights"]
COMPLETED = "stmix_completed"  # layers: completed expression, plus f"{COMPLETED}_missing"
SELECTED = "stmix_selected"  # var: bool, genes chosen by pp.select_genes

# tl
MODEL = "stmix"  # uns: fit record; layers: predictions; var/uns prefix of metrics


def connectivities_key(key_added: str) -> str:
    """``obsp`` key of the partner-candidate graph written by :func:`stmix.pp.neighbors`."""
    return f"{key_added}_connectivities"


def weights_key(key_added: str) -> str:
    """``obsp`` key of the row-stochastic sampling weights written by :func:`stmix.pp.neighbors`."""
    return f"{key_added}_weights"


def neighbors_uns_key(key_added: str) -> str:
    """``uns`` key of the parameters recorded by :func:`stmix.pp.neighbors`."""
    return f"{key_added}_neighbors"


def metrics_uns_key(key_added: str) -> str:
    """``uns`` key of the overall metrics written by :func:`stmix.tl.evaluate`."""
    return f"{key_added}_metrics"
