"""Every AnnData key that stmix reads or writes, in one place.

Each function that writes one of these takes a ``key_added`` argument, so the names below are
only the defaults. Several roles share the string ``"stmix"`` (the contract in the README): the
constants are separate so that each call site says which role it means.
"""

# input, scanpy / squidpy convention
SPATIAL = "spatial"  # obsm: spot centres in full-resolution pixels (x, y); uns: images
LIBRARY_KEY = "library_id"  # obs: categorical, each spot's section (squidpy's library_key)

# pp
SPLIT = "stmix_split"  # obs: categorical train / val / test
SPLIT_CATEGORIES = ("train", "val", "test")
PATCHES = "stmix_patches"  # obsm: uint8 (n_obs, size, size, 3); uns: {"params": {...}}
NEIGHBORS = "stmix"  # prefix: obsp[f"{NEIGHBORS}_connectivities"], obsp[f"{NEIGHBORS}_weights"]
COMPLETED = "stmix_completed"  # layers: completed expression, plus f"{COMPLETED}_missing"
SELECTED = "stmix_selected"  # var: bool, genes chosen by pp.select_genes

# tl
EMBEDDING = "stmix_embedding"  # obsm: a frozen encoder's features; uns: how they were made
FIT = "stmix"  # uns: the record of tl.fit
PREDICTIONS = "stmix"  # layers: the predictions of tl.impute
METRICS = "stmix"  # prefix: var[f"{METRICS}_mse"] ..., uns[f"{METRICS}_metrics"] of tl.evaluate


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
