//! Where the images a message codes come from, read a batch at a time, so that the encoder holds
//! one batch of them: an [`ImageSet`] in memory, or PNG files read when their batch is coded
//! ([`PngFiles`]).

use std::ops::Range;
use std::path::PathBuf;

use crate::data::{png, ImageSet};
use crate::error::{Error, Result};

/// Images of one shape, read by index range.
pub trait Images {
    /// Number of images.
    fn count(&self) -> usize;
    /// `[C, H, W]` of every image.
    fn shape(&self) -> [usize; 3];
    /// The pixels of images `range` (`[N, C, H, W]` flattened).
    fn read(&self, range: Range<usize>) -> Result<Vec<u8>>;
}

impl Images for ImageSet {
    fn count(&self) -> usize {
        self.len()
    }

    fn shape(&self) -> [usize; 3] {
        ImageSet::shape(self)
    }

    fn read(&self, range: Range<usize>) -> Result<Vec<u8>> {
        let d = self.features();
        Ok(self.pixels[range.start * d..range.end * d].to_vec())
    }
}

/// PNG files (8-bit grey or RGB, [`png::decode_lossless`]), all of one shape, each read when it
/// is needed.
#[derive(Clone, Debug)]
pub struct PngFiles {
    paths: Vec<PathBuf>,
    shape: [usize; 3],
}

impl PngFiles {
    /// `paths`, which must all hold images of `shape`; the first is read to check it (the others
    /// when they are read).
    pub fn new(paths: Vec<PathBuf>, shape: [usize; 3]) -> Result<Self> {
        let files = Self { paths, shape };
        if !files.paths.is_empty() {
            files.decode(0)?;
        }
        Ok(files)
    }

    fn decode(&self, i: usize) -> Result<Vec<u8>> {
        let path = &self.paths[i];
        let (pixels, shape) = png::decode_lossless(path)?;
        if shape != self.shape {
            return Err(Error::File {
                path: path.clone(),
                message: format!("an image of {shape:?}; the model takes {:?}", self.shape),
            });
        }
        Ok(pixels)
    }
}

impl Images for PngFiles {
    fn count(&self) -> usize {
        self.paths.len()
    }

    fn shape(&self) -> [usize; 3] {
        self.shape
    }

    fn read(&self, range: Range<usize>) -> Result<Vec<u8>> {
        let mut pixels = Vec::with_capacity(range.len() * self.shape.iter().product::<usize>());
        for i in range {
            pixels.extend(self.decode(i)?);
        }
        Ok(pixels)
    }
}
