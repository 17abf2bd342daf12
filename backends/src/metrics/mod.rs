//! Sample-quality metrics on a classifier's features ([`crate::nn::classifier`]): the Fréchet
//! distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017, with this
//! project's classifier in place of Inception), the Inception-Score analogue
//! `exp(E_x KL(p(y|x) ‖ p(y)))` (Salimans et al. 2016), and the share of confidently classified
//! samples.

pub mod classifier;

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{Error, Result};

/// The mean and covariance (unbiased, `1/(n − 1)`) of feature rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    /// The mean.
    pub mean: DVector<f64>,
    /// The covariance.
    pub covariance: DMatrix<f64>,
}

impl Gaussian {
    /// Fits the rows of `features` (at least two, all of one length).
    pub fn fit(features: &[Vec<f64>]) -> Result<Self> {
        let n = features.len();
        let d = features.first().map_or(0, Vec::len);
        if n < 2 || d == 0 || features.iter().any(|row| row.len() != d) {
            return Err(Error::Mismatch(format!(
                "a Gaussian fit needs at least two feature rows of one non-zero length, got {n}"
            )));
        }
        let x = DMatrix::from_fn(n, d, |i, j| features[i][j]);
        let mean = DVector::from_fn(d, |j, _| x.column(j).mean());
        let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
        let covariance = centred.transpose() * &centred / (n as f64 - 1.0);
        Ok(Self { mean, covariance })
    }
}

/// `A^{1/2}` of a symmetric positive semi-definite matrix, through its eigendecomposition, with
/// eigenvalues below zero (rounding) taken as zero.
fn sqrt_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new((a + a.transpose()) / 2.0);
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// The Fréchet (2-Wasserstein) distance between `N(μ₁, Σ₁)` and `N(μ₂, Σ₂)`:
///
/// `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}`.
///
/// The cross term is computed from the symmetric matrix `Σ₁^{1/2} Σ₂ Σ₁^{1/2}` (whose square
/// root has the trace of `(Σ₁Σ₂)^{1/2}`), so every square root is of a symmetric positive
/// semi-definite matrix and stays real even when `Σ₁` is singular, as it is with fewer samples
/// than features.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let root_a = sqrt_psd(&a.covariance);
    let middle = &root_a * &b.covariance * &root_a;
    let cross: f64 =
        SymmetricEigen::new((&middle + middle.transpose()) / 2.0).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    (&a.mean - &b.mean).norm_squared() + a.covariance.trace() + b.covariance.trace() - 2.0 * cross
}

/// `exp(E_x KL(p(y|x) ‖ p(y)))` with `p(y)` the mean of the rows: between 1 (every sample
/// classified alike) and the number of classes (confident and balanced).
pub fn inception_score(probabilities: &[Vec<f64>]) -> f64 {
    let n = probabilities.len().max(1) as f64;
    let k = probabilities.first().map_or(0, Vec::len);
    let marginal: Vec<f64> = (0..k).map(|j| probabilities.iter().map(|p| p[j]).sum::<f64>() / n).collect();
    let kl = |p: &Vec<f64>| {
        p.iter().zip(&marginal).filter(|(&pj, _)| pj > 0.0).map(|(&pj, &mj)| pj * (pj / mj).ln()).sum::<f64>()
    };
    (probabilities.iter().map(kl).sum::<f64>() / n).exp()
}

/// The share of rows whose largest class probability exceeds `threshold`.
pub fn confident_share(probabilities: &[Vec<f64>], threshold: f64) -> f64 {
    let confident = probabilities.iter().filter(|p| p.iter().cloned().fold(0.0, f64::max) > threshold).count();
    confident as f64 / probabilities.len().max(1) as f64
}

/// FID, the IS analogue and the confident share of samples against reference images, from the
/// classifier's features and probabilities of both.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QualityReport {
    /// Fréchet distance between the samples' and the references' features.
    pub fid: f64,
    /// The Inception-Score analogue of the samples.
    pub inception_score: f64,
    /// The share of samples classified with probability above 0.9.
    pub confident_share: f64,
    /// The same three for the reference images themselves (the scale to read the others on).
    pub reference_inception_score: f64,
    /// The references' confident share.
    pub reference_confident_share: f64,
}

impl QualityReport {
    /// The metrics of samples `(features, probabilities)` against references.
    pub fn new(samples: (&[Vec<f64>], &[Vec<f64>]), reference: (&[Vec<f64>], &[Vec<f64>])) -> Result<Self> {
        Ok(Self {
            fid: frechet_distance(&Gaussian::fit(samples.0)?, &Gaussian::fit(reference.0)?),
            inception_score: inception_score(samples.1),
            confident_share: confident_share(samples.1, 0.9),
            reference_inception_score: inception_score(reference.1),
            reference_confident_share: confident_share(reference.1, 0.9),
        })
    }
}
