"""Measurement: one core (``session``) that times anything on a device and writes its rows, used by
campaigns over search-space cells (``campaign``), operators for the layer-wise lookup
(``operators``), named networks (``named_models``) and kernels; ``preparation`` converts networks
ahead of the device."""
