//! A burn module's parameters as the named tensors of a safetensors file, in PyTorch's layouts,
//! out and in. A [`Layout`] says what each parameter is called in the file.
//!
//! PyTorch's linear layers store their weight `[out, in]`, burn's `[in, out]`: a linear layer's
//! weight is transposed on the way out and back on the way in. Convolutions are laid out alike.

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::transfer::{download, upload};

/// What a file calls a module's parameters, and the names its messages use.
pub(crate) struct Layout<'a> {
    /// The weights file, as messages name it.
    pub weights_file: &'a str,
    /// The file that configures the network, as messages name it.
    pub config_file: &'a str,
    /// The layout's name in messages ("diffusers").
    pub names: &'a str,
    /// The file's name of the parameter at a path in PyTorch's terms ([`Path::torch_path`]);
    /// `None` for a parameter the layout has no name for.
    pub name: fn(&[&str]) -> Option<String>,
}

/// The module path while a visitor or mapper walks a module: field names, and whether the
/// innermost container is a linear layer (whose `weight` PyTorch stores transposed).
#[derive(Default)]
struct Path {
    names: Vec<String>,
    containers: Vec<String>,
}

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    /// The parameter's path in PyTorch's terms: the field names from the root (a vector's
    /// elements named by their index), without the field `conv` or `norm` by which this crate's
    /// `Conv` and `Norm` wrap burn's `Conv2d` and `GroupNorm`, and with GroupNorm's `gamma` and
    /// `beta` called `weight` and `bias`.
    fn torch_path(&self) -> Vec<&str> {
        let mut path: Vec<&str> = self.names.iter().map(String::as_str).collect();
        if let Some(param) = path.last_mut() {
            *param = match *param {
                "gamma" => "weight",
                "beta" => "bias",
                other => other,
            };
        }
        let n = path.len();
        if n >= 3 && matches!(path[n - 2], "conv" | "norm") {
            path.remove(n - 2);
        }
        path
    }

    /// The file's name of the parameter here, and whether it is a linear layer's weight.
    fn name(&self, layout: &Layout) -> Result<(String, bool)> {
        let name = (layout.name)(&self.torch_path()).ok_or_else(|| {
            Error::Mismatch(format!("the parameter {} has no {} name", self.names.join("."), layout.names))
        })?;
        let linear_weight = self.containers.last().is_some_and(|c| c == "Struct:Linear")
            && self.names.last().is_some_and(|n| n == "weight");
        Ok((name, linear_weight))
    }
}

/// `module`'s weights as a safetensors file in `layout` (`f32`, PyTorch's layouts).
pub(crate) fn export<B: Backend, M: Module<B>>(module: &M, layout: &Layout) -> Result<Vec<u8>> {
    struct Collect<'a> {
        layout: &'a Layout<'a>,
        path: Path,
        tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
        error: Option<Error>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.path.name(self.layout) {
                Ok((name, linear_weight)) => {
                    let value = if linear_weight { param.val().transpose() } else { param.val() };
                    let shape = value.dims().to_vec();
                    let bytes = download(value).iter::<f32>().flat_map(f32::to_le_bytes).collect();
                    self.tensors.push((name, shape, bytes));
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
    }
    let mut collect = Collect { layout, path: Path::default(), tensors: Vec::new(), error: None };
    module.visit(&mut collect);
    if let Some(e) = collect.error {
        return Err(e);
    }
    let views = collect
        .tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| Error::Mismatch(format!("{name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::Mismatch(format!("writing {}: {e}", layout.weights_file)))
}

/// `module` (built from the file's configuration) with the weights of the safetensors file
/// `bytes` in `layout`. Every tensor must be there with its shape and `f32`, and the file must
/// hold no other; an error names the first tensor that is not.
pub(crate) fn import<B: Backend, M: Module<B>>(module: M, bytes: &[u8], layout: &Layout) -> Result<M> {
    let (weights, config) = (layout.weights_file, layout.config_file);
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Corrupt(format!("{weights} is not a safetensors file: {e}")))?;
    struct Load<'a> {
        layout: &'a Layout<'a>,
        path: Path,
        file: &'a SafeTensors<'a>,
        used: HashSet<String>,
        error: Option<Error>,
    }
    impl Load<'_> {
        fn read<B: Backend, const D: usize>(&mut self, current: &Tensor<B, D>) -> Result<Tensor<B, D>> {
            let (weights, config) = (self.layout.weights_file, self.layout.config_file);
            let (name, linear_weight) = self.path.name(self.layout)?;
            let view =
                self.file.tensor(&name).map_err(|_| Error::Mismatch(format!("{weights} has no tensor {name}")))?;
            let mut want = current.dims().to_vec();
            if linear_weight {
                want.reverse();
            }
            if view.shape() != want.as_slice() {
                return Err(Error::Mismatch(format!(
                    "{weights}: {name} has shape {:?}; the network configured by {config} needs {want:?}",
                    view.shape()
                )));
            }
            if view.dtype() != Dtype::F32 {
                return Err(Error::Mismatch(format!("{weights}: {name} is {:?}, not F32", view.dtype())));
            }
            let values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let tensor: Tensor<B, D> = upload(TensorData::new(values, want), &current.device());
            self.used.insert(name);
            Ok(if linear_weight { tensor.transpose() } else { tensor })
        }
    }
    impl<B: Backend> ModuleMapper<B> for Load<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, current, mapper) = param.consume();
            let value = match self.read(&current) {
                Ok(value) => value,
                Err(e) => {
                    self.error.get_or_insert(e);
                    current
                }
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut load = Load { layout, path: Path::default(), file: &file, used: HashSet::new(), error: None };
    let module = module.map(&mut load);
    if let Some(e) = load.error {
        return Err(e);
    }
    let mut unused: Vec<String> =
        file.names().into_iter().filter(|n| !load.used.contains(*n)).map(String::from).collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(Error::Mismatch(format!(
            "{weights} holds {} tensor(s) the network configured by {config} has no place for, first {first}",
            unused.len()
        )));
    }
    Ok(module)
}
