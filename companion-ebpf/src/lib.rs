#![no_std]
// The kernel programs are the binary target (src/main.rs); this library is empty.
