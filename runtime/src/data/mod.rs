//! Data sets and loading (to be filled in: list files, ImageNet-LT JSON, CIFAR binary,
//! image folders, the built-in digits; parallel decoding with a bounded prefetch queue).
