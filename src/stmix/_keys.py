"""Every AnnData key that stmix reads or writes, in one place.

Each function that writes one of these takes a ``key_added`` argument, so the names below are
only the defaults. Several roles share the string ``"stmix"`` (the contract in the README): the
constants are separate so that each call site says which role it means.

The names follow three rules (the README's contract section lists every parameter):

- ``layer`` always names the expression a step reads (``None``: ``X``); ``key`` names the
  predictions a step reads, ``key_added`` the key a step writes.
- A ``key_added`` that names one output (``obs[key_added]``, ``obsm[key_added]``,
  ``var[key_added]``) has its record at ``uns[key_added]``. A ``key_added`` that prefixes
  several outputs (:func:`stmix.pp.neighbors`' two graphs, :func:`stmix.tl.impute`'s layer and
  ``var`` column, :func:`stmix.tl.evaluate`'s three columns) has its record at
  ``uns[f"{key_added}_{role}"]``, as squidpy's ``spatial_neighbors`` does: :func:`record_key`.
- Every record is a dict whose ``"writer"`` names the stmix step that wrote it; a step replaces
  only keys whose record names it (:mod:`stmix._owner`).
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
PREDICTIONS = "stmix"  # prefix: layers[PREDICTIONS] and var[f"{PREDICTIONS}_predicted"]
METRICS = "stmix"  # prefix: var[f"{METRICS}_mse"] ..., uns[f"{METRICS}_metrics"] of tl.evaluate

#: The role suffix of each prefix writer's record (see :func:`record_key`).
NEIGHBORS_ROLE = "neighbors"
IMPUTE_ROLE = "impute"
METRICS_ROLE = "metrics"


def record_key(key_added: str, role: str | None = None) -> str:
    """``uns`` key of a writer's record: ``key_added``, or ``f"{key_added}_{role}"`` (prefix)."""
    return key_added if role is None else f"{key_added}_{role}"


def connectivities_key(key_added: str) -> str:
    """``obsp`` key of the partner-candidate graph written by :func:`stmix.pp.neighbors`."""
    return f"{key_added}_connectivities"


def weights_key(key_added: str) -> str:
    """``obsp`` key of the row-stochastic sampling weights written by :func:`stmix.pp.neighbors`."""
    return f"{key_added}_weights"


def neighbors_uns_key(key_added: str) -> str:
    """``uns`` key of the parameters recorded by :func:`stmix.pp.neighbors`."""
    return record_key(key_added, NEIGHBORS_ROLE)


def predicted_key(key_added: str) -> str:
    """``var`` key of the boolean column marking the genes :func:`stmix.tl.impute` predicted."""
    return f"{key_added}_predicted"


#: What ``tl.impute(..., interval=)`` writes beside the predictions: layers, then an obs column.
SPREAD_LAYERS = ("std", "lower", "upper")
FLAG = "ood"


def spread_layer_key(key_added: str, role: str) -> str:
    """``layers`` key of the spread (``"std"``) or a bound (``"lower"``, ``"upper"``)."""
    return f"{key_added}_{role}"


def flag_key(key_added: str) -> str:
    """``obs`` key of the 0-1 flag of tissue unlike the training data."""
    return f"{key_added}_{FLAG}"


def impute_uns_key(key_added: str) -> str:
    """``uns`` key of the record written by :func:`stmix.tl.impute` and :func:`stmix.tl.predict`."""
    return record_key(key_added, IMPUTE_ROLE)


def metrics_uns_key(key_added: str) -> str:
    """``uns`` key of the overall metrics written by :func:`stmix.tl.evaluate`."""
    return record_key(key_added, METRICS_ROLE)
