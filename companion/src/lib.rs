//! companion: which processes run inside each container of a Linux host.
//!
//! Data flows one way: the [`tracker`] knows which processes exist and in which container; the
//! [`sampler`] reads /proc for those processes every period into a sample ([`model`]); the
//! [`history`] keeps the samples and computes CPU shares over them, the [`inventory`] sums them
//! up per container, and the [`exits`] ledger keeps the processes that ended. The [`pipeline`]
//! (the write side, the sampler thread's loop) runs these on a fixed schedule and publishes the
//! result in the [`store`] (the read side); the [`api`] answers from the newest publication, and [`metrics`] serves it to Prometheus.
//!
//! /proc files are parsed in [`procfs`]; which cgroup a process belongs to, and what the cgroup
//! files say of a container, in [`cgroup`].

pub mod allocator;
pub mod api;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod descriptors;
pub mod events;
pub mod exits;
pub mod history;
pub mod inventory;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod privileges;
pub mod procfs;
pub mod runtime;
pub mod sampler;
pub mod seccomp;
pub mod service;
pub mod store;
pub mod tracker;
