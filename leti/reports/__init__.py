"""Reports: shared table code (``tables``), plots (``plots``), the published-data comparison
(``published``), predictors beside a measured noise floor (``measured``) and the investigation of
every store (``investigation``)."""
