"""A width supernet (``search.strategy: supernet``): one prefix-sliceable student at the space's largest
widths, distilled with the sandwich rule (:mod:`.train`), whose sub-networks (:mod:`.slicing`) are scored
with inherited weights over the space's architectures (:mod:`.space`)."""
