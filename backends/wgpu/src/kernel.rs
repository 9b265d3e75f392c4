//! What a kernel is: a WGSL entry point, the storage buffers it binds (in binding order), and
//! its workgroup size. Every module gets the common prelude (parameter access, fault slot,
//! flat invocation index) prepended.

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    ReadWrite,
}

impl Access {
    pub(crate) fn read_only(self) -> bool {
        self == Access::Read
    }
}

pub(crate) struct Kernel {
    /// The WGSL module (without the prelude).
    pub(crate) module: &'static str,
    pub(crate) entry: &'static str,
    pub(crate) bindings: &'static [Access],
    /// Invocations per workgroup along x (the shader's `@workgroup_size`).
    pub(crate) workgroup: u32,
}

pub(crate) const PRELUDE: &str = include_str!("shaders/prelude.wgsl");

impl Kernel {
    pub(crate) fn source(&self) -> String {
        let mut s = String::with_capacity(PRELUDE.len() + self.module.len() + 1);
        s.push_str(PRELUDE);
        s.push('\n');
        s.push_str(self.module);
        s
    }
}

/// Declares a `static` [`Kernel`].
macro_rules! kernel {
    ($name:ident, $module:expr, $entry:literal, [$($access:ident),* $(,)?], $workgroup:expr) => {
        pub(crate) static $name: $crate::kernel::Kernel = $crate::kernel::Kernel {
            module: $module,
            entry: $entry,
            bindings: &[$($crate::kernel::Access::$access),*],
            workgroup: $workgroup,
        };
    };
}
pub(crate) use kernel;
