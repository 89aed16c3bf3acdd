"""Batch runs over many CTs on a Dask cluster (``lnq batch``).

* :mod:`.cases`: the cases of a run, from a folder of CTs / DICOM series folders or a CSV;
* :mod:`.manifest`: what was done, with output hashes and input fingerprints, so a rerun skips
  exactly the cases whose outputs are intact and whose inputs and settings are unchanged;
* :mod:`.run_case`: one case (segment + measure, + evaluate with a reference) on a worker;
* :mod:`.cluster`: an embedded ``LocalCluster`` sized to the machine, or an existing scheduler;
* :mod:`.cohort`: the cohort node table, the per-case summary and the evaluation summary;
* :mod:`.runner`: the run itself (submit, gather, record, never stop at a failed case).
"""
