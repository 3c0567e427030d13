//! skiff-kubelet
