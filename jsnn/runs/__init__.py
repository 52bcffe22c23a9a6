"""The orchestration floor: runs of every method, and what they leave in their workdir.

Everything in jsnn/ below this package knows nothing of workdirs, results files or programs;
everything here imports only downward (and within the package, in this order):

    lock.py       one run per workdir (the standard library only)
    workdir.py    the workdir contract: files, the one rule for the signature and for config.json, the claim
    outputs.py    what a run writes besides results, hooks that see its phases
    tickets.py    where tickets go, writing them and their cost pass
    segment.py    data/model/trainer set-up and resumable training segments
    results.py    reading results back: labels, comparison figures
    run.py        one run of any method: the Plan base class (its defaults) and Run
    controls.py   the lottery-ticket controls (IMP's collaborator)
    early_bird.py early-bird search (IMP's collaborator)
    mask_search.py  the search-then-finetune Plan base (the energy method's and Shi et al.'s)
    dense.py, edge_popup.py, imp.py, sparse_training.py, energy.py, shi.py   the methods (options, Plan, run)
    registry.py   methods by name: run_method, what every program in train/ calls
    report.py     the cost report of a finished run
"""
