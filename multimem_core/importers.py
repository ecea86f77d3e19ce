"""Bring your own embeddings or scores: `multimem import-embeddings` and `multimem import-scores`.

Teams that train large models embed their data on their own cluster with their own code. These two
paths turn what they have into a run directory (DESIGN §6) that the dashboard opens:

import_embeddings   embeddings of every sample under the models that trained on it and the one that did
                    not -> scores by the same code as `multimem score` (score.write_scored: the metric,
                    the baselines that need only embeddings, the diagnostics, the projection).
import_scores       a table with `id` and score columns (e.g. from the paper's scripts) -> a run whose
                    embeddings, diagnostics and projection are absent, and the dashboard says so.

A model is a folder with, per modality m (two or more of image, text, audio, video), one of

    m.npy          [N, d] (one view) or [A, N, d] (A augmented views), any float dtype
    m.views.npy    [A, N, d]: the views, with m.npy [N, d] then the clean view (`multimem score --save-views`;
                   it also writes m.heldout.views.npy [A, M, d] + heldout.ids.txt, the views of its H pass)
    m.parquet      an `id` column and one vector column; a cell is a vector [d] or a list of A views [A][d]

and for .npy files the ids, one a line, in m.ids.txt or (shared by the modalities) ids.txt. A run's own
RUN/embeddings/<model>/ folders have exactly this shape. Two layouts:

    paper      --in-model DIR --out-model DIR --heldout IDS: DIR's model trained on the scored samples,
               the other did not; the run calls them f and g. With --roles (S_S/S_C/S_I/H per id) the
               paper's sets are scored as `multimem score --protocol paper` scores them.
    crossfit   --crossfit DIR --roles FILE: one subfolder per model; a sample's role is the name of the
               model that did not train on it (or H, held out). RUN/samples.parquet is such a file.

Embeddings are L2-normalised on the way in (the metric needs unit vectors). Everything is checked before
anything is written: ids that differ between files, shapes, NaN or all-zero vectors, dimensions that
differ between modalities, fewer than two modalities; the message names the file and the ids. The run is
written into a temporary folder beside --out and renamed at the end, so a failure leaves nothing half.

The work lives in multimem_core.importing (one module per responsibility); this module keeps the public names.
"""

from __future__ import annotations

from .importing.embedding_files import (DEFAULT_TEMPERATURE, ImportValidationError, EmbeddingFile,  # noqa: F401
                                        ModelEmbeddings, check_vectors, read_model)
from .importing.embeddings import EmbeddingImport, import_embeddings  # noqa: F401
from .importing.layout import build_assignment, read_ids, read_table  # noqa: F401
from .importing.scores import ScoresImport, import_scores, score_column_name  # noqa: F401
