//! The kernels' argument structs. Each kernel family's scalar parameters are one `#[repr(C)]`
//! struct, declared once in Rust (with [`kernel_args!`], in the family's `ops/<family>.rs`) and
//! once in its `kernels/<family>.cu`, and passed to the family's kernels by value after their
//! buffers. A kernel reads the fields it needs; the others are left at zero.
//!
//! The drift check: NVRTC compares the two declarations whenever it compiles the kernels.
//! [`defines`] hands it, for every struct `S` of [`crate::ops::ARGS`], the Rust layout as macros
//! (`S_SIZE`, and `S_f_OFFSET` and `S_f_TYPE` for each field `f`), and every `.cu` asserts its
//! struct against them (`ARGS_SIZE(S)`, `ARGS_FIELD(S, f)` of `common.cuh`). A struct changed
//! on one side only then fails the compile, in CI's NVRTC test and when a backend opens, with a
//! message naming the struct and field, instead of a kernel silently reading its scalars from
//! the wrong bytes. Two properties close the gaps the assertions leave: the structs have no
//! implicit padding (asserted as the Rust compiles), so a field added only to the `.cu` changes
//! the size; and every Rust field has its `ARGS_FIELD` line (tested below without NVRTC), so
//! none goes unchecked.

/// The C type a Rust field is declared with in the `.cu` files (`u32` is `common.cuh`'s typedef;
/// `size_t` is 64 bits on every device, hence `u64` rather than the host's `usize`).
pub(crate) trait CType {
    const NAME: &'static str;
}

impl CType for u32 {
    const NAME: &'static str = "u32";
}

impl CType for f32 {
    const NAME: &'static str = "float";
}

impl CType for u64 {
    const NAME: &'static str = "size_t";
}

/// One field of an argument struct as Rust lays it out.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) offset: usize,
    pub(crate) c_type: &'static str,
}

/// An argument struct as Rust lays it out: what the `.cu` declaration is checked against.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    pub(crate) fields: &'static [Field],
}

/// Declares a kernel argument struct: `#[repr(C)]`, every field `pub(crate)`, `Default` (all
/// zero), passable by value to a kernel (`DeviceRepr`), and its [`Layout`] as `Self::LAYOUT`.
/// Fields are `u32`, `f32` or `u64` ([`CType`]), ordered so that no padding is implied; where
/// alignment would leave a gap, an explicit `unused: u32` field fills it.
macro_rules! kernel_args {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident: $ty:ty, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        $vis struct $name {
            $( $(#[$field_meta])* pub(crate) $field: $ty, )+
        }

        // No implicit padding: the fields' sizes add up to the struct's.
        const _: () = assert!(
            0 $( + ::core::mem::size_of::<$ty>() )+ == ::core::mem::size_of::<$name>(),
            concat!(stringify!($name), " has padding: fill it with an `unused: u32` field")
        );

        // SAFETY: a `#[repr(C)]` struct of `u32`, `f32` and `u64` fields with no implicit
        // padding (asserted above), so every byte the driver copies is initialised; the
        // kernels' compile asserts that the `.cu` declaration has this size and these offsets
        // and types, so the kernels read the fields where they are written.
        unsafe impl cudarc::driver::DeviceRepr for $name {}

        impl $name {
            /// This struct's Rust layout, for the drift check.
            pub(crate) const LAYOUT: $crate::kernel_args::Layout = $crate::kernel_args::Layout {
                name: stringify!($name),
                size: ::core::mem::size_of::<$name>(),
                fields: &[$(
                    $crate::kernel_args::Field {
                        name: stringify!($field),
                        offset: ::core::mem::offset_of!($name, $field),
                        c_type: <$ty as $crate::kernel_args::CType>::NAME,
                    },
                )+],
            };
        }
    };
}
pub(crate) use kernel_args;

/// A host size as a kernel's `size_t` field (lossless: `usize` is at most 64 bits wide).
pub(crate) fn size_t(x: usize) -> u64 {
    x as u64
}

/// The NVRTC options that define `layouts` for the `.cu` assertions: `-DS_SIZE=`, and
/// `-DS_f_OFFSET=` and `-DS_f_TYPE=` for each field.
pub(crate) fn defines(layouts: &[Layout]) -> Vec<String> {
    let mut options = Vec::new();
    for layout in layouts {
        let s = layout.name;
        options.push(format!("-D{s}_SIZE={}", layout.size));
        for field in layout.fields {
            let f = field.name;
            options.push(format!("-D{s}_{f}_OFFSET={}", field.offset));
            options.push(format!("-D{s}_{f}_TYPE={}", field.c_type));
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::SOURCE;
    use crate::kernels::{compile_with, supported_architectures, tests::nvrtc_or_skip, Target};
    use crate::ops::ARGS;

    /// The `(struct, field)` pairs of the `ARGS_FIELD` lines and the structs of the `ARGS_SIZE`
    /// lines in the kernel sources (the macros' own definitions apart).
    fn asserted() -> (Vec<(String, String)>, Vec<String>) {
        let (mut fields, mut sizes) = (Vec::new(), Vec::new());
        for line in SOURCE.lines().map(str::trim) {
            let inside = |tag: &str| {
                let rest = line.strip_prefix(tag)?;
                Some(rest.split(')').next()?.to_string())
            };
            if let Some(args) = inside("ARGS_FIELD(") {
                let (s, f) = args.split_once(',').unwrap_or((&args, ""));
                fields.push((s.trim().to_string(), f.trim().to_string()));
            } else if let Some(s) = inside("ARGS_SIZE(") {
                sizes.push(s.trim().to_string());
            }
        }
        (fields, sizes)
    }

    /// Every Rust struct and field is asserted in the kernel sources, exactly once, and every
    /// assertion names a Rust struct and field.
    #[test]
    fn every_argument_field_is_asserted_in_the_kernels() {
        assert!(!ARGS.is_empty());
        let (fields, sizes) = asserted();
        for layout in ARGS {
            let s = layout.name;
            let count = sizes.iter().filter(|x| *x == s).count();
            assert_eq!(
                count, 1,
                "ARGS_SIZE({s}) appears {count} times in the kernels"
            );
            for field in layout.fields {
                let f = field.name;
                let count = fields.iter().filter(|(a, b)| a == s && b == f).count();
                assert_eq!(count, 1, "ARGS_FIELD({s}, {f}) appears {count} times");
            }
        }
        for (s, f) in &fields {
            let known = ARGS
                .iter()
                .any(|l| l.name == s && l.fields.iter().any(|x| x.name == f));
            assert!(known, "ARGS_FIELD({s}, {f}) names no Rust field");
        }
        for s in &sizes {
            assert!(
                ARGS.iter().any(|l| l.name == s),
                "ARGS_SIZE({s}) names no Rust struct"
            );
        }
    }

    /// `layouts` with `plant` applied to each struct's defines.
    fn planted(plant: impl Fn(&Layout, &mut Vec<String>)) -> Vec<String> {
        let mut options = Vec::new();
        for layout in ARGS {
            let mut own = defines(std::slice::from_ref(layout));
            plant(layout, &mut own);
            options.extend(own);
        }
        options
    }

    /// The oldest architecture the loaded NVRTC compiles for from Turing on, as PTX: the
    /// assertions fail in NVRTC's front end, before any code is generated.
    fn target() -> Target {
        let supported = supported_architectures().unwrap();
        let arch = supported.iter().copied().find(|&a| a >= 75);
        Target::Ptx(arch.unwrap_or_else(|| panic!("no architecture from sm_75 on: {supported:?}")))
    }

    /// A drift planted on the Rust side (a size, an offset, a type) fails the compile, and the
    /// log names every struct and field it was planted in; the true layouts compile.
    #[test]
    fn a_planted_drift_fails_the_compile_naming_the_struct() {
        if !nvrtc_or_skip() {
            return;
        }
        let target = target();
        if let Err(e) = compile_with(target, &defines(ARGS)) {
            panic!("the true layouts must compile: {e}");
        }

        // Every struct four bytes larger than the `.cu` has it.
        let options = planted(|layout, own| {
            own[0] = format!("-D{}_SIZE={}", layout.name, layout.size + 4);
        });
        let log = compile_with(target, &options).expect_err("a planted size drift compiled");
        for layout in ARGS {
            let message = format!(
                "{}: its size differs from the Rust declaration's",
                layout.name
            );
            assert!(log.contains(&message), "no `{message}` in:\n{log}");
        }

        // Every struct's last field four bytes further on, its first one of another type.
        let options = planted(|layout, own| {
            let (first, last) = (&layout.fields[0], &layout.fields[layout.fields.len() - 1]);
            let at = own.len() - 2;
            own[at] = format!("-D{}_{}_OFFSET={}", layout.name, last.name, last.offset + 4);
            let other = if first.c_type == "float" {
                "u32"
            } else {
                "float"
            };
            own[2] = format!("-D{}_{}_TYPE={other}", layout.name, first.name);
        });
        let log = compile_with(target, &options).expect_err("a planted field drift compiled");
        for layout in ARGS {
            let (first, last) = (&layout.fields[0], &layout.fields[layout.fields.len() - 1]);
            for message in [
                format!("{}.{}: its offset differs", layout.name, last.name),
                format!("{}.{}: its type differs", layout.name, first.name),
            ] {
                assert!(log.contains(&message), "no `{message}` in:\n{log}");
            }
        }
    }
}
