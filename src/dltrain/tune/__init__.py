"""`dltrain tune`: model selection, hyperparameter search and feature selection with Optuna.

Every trial is one fit of the config with the sampled values applied as ``--set`` would
apply them, run inside a worker process that parsed the dataset once. Workers share one
Optuna storage: a journal file in the study folder by default, or a PostgreSQL database
(``--storage postgresql://…``) for workers on many machines. Nothing here prints.

The modules, from the bottom up:

- ``space``: the ``tune:`` section as a search plan, each entry checked before any trial;
- ``credentials``: storage URLs with their passwords masked, for every message and file;
- ``liveness``: which worker runs a trial and whether it is still alive;
- ``journal``: the journal file checked (and a torn last record cut) before anyone reads it;
- ``silence``: a database statement without an answer for two heartbeats is cut off;
- ``storage``: the one adapter to Optuna (its storages, its private attributes, its versions);
- ``identity``: what a study is for (its search, its data, target and task);
- ``trials``: what a trial is to dltrain (counted states, surplus trials, values as config);
- ``fitting``: what a trial needs from the fit machinery above this package;
- ``features``: feature selection (ranking the columns, keeping the top ``k``);
- ``worker``: the loop that runs trials in one process, and the pruner's per-epoch hook;
- ``study_folder``: claiming the folder (ours only, locked, one study), trials.csv, best.yaml, best/;
- ``search``: the whole command: checks, workers in processes, the summary.
"""
