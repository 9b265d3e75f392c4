//! Augmentation (to be filled in: the stage-1 query/key views and PBSD crops, the stage-2 and
//! evaluation views).
