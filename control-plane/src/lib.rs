//! kubewire control plane.
