"""The library side of the Prefect flows: the measurement campaign over devices (``measure``) and
the pipeline that runs DVC's stages as tasks (``pipeline``); ``flows/`` holds their command lines."""
