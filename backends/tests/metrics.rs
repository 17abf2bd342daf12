//! Sample-quality metrics: the Fréchet distance against closed forms, the IS analogue at its
//! extremes and on a case by hand, the classifier (training, accuracy, verified save and load),
//! and the FID pipeline on its features (the test set against itself, training images against
//! noise).

use nalgebra::{DMatrix, DVector};
use vdm_backends::config::RunConfig;
use vdm_backends::data::ImageSet;
use vdm_backends::metrics::classifier::{self, ClassifierConfig, ClassifierInfo};
use vdm_backends::metrics::{confident_share, frechet_distance, inception_score, Gaussian, QualityReport};
use vdm_backends::{Autodiff, Cpu};
use vdm_core::rng::SplitMix64;

fn gaussian(mean: &[f64], covariance: &[f64]) -> Gaussian {
    let d = mean.len();
    Gaussian { mean: DVector::from_column_slice(mean), covariance: DMatrix::from_row_slice(d, d, covariance) }
}

#[test]
fn frechet_distance_matches_closed_forms() {
    // Diagonal covariances: ‖μ₁ − μ₂‖² + Σ (√a_i − √b_i)².
    let (a, b) = (
        gaussian(&[1.0, -2.0, 0.5], &[4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25]),
        gaussian(&[0.0, 0.0, 0.5], &[1.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.25]),
    );
    let want = 1.0 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
    assert!((frechet_distance(&a, &b) - want).abs() < 1e-10, "{} vs {want}", frechet_distance(&a, &b));
    // Non-commuting 2×2 covariances: tr (Σ₁Σ₂)^{1/2} = √(tr Σ₁Σ₂ + 2 √(det Σ₁ det Σ₂)).
    let (s1, s2) = ([2.0, 0.7, 0.7, 1.0], [1.5, -0.4, -0.4, 0.5]);
    let (a, b) = (gaussian(&[0.3, 0.1], &s1), gaussian(&[-0.2, 0.4], &s2));
    let tr_prod = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
    let dets = (s1[0] * s1[3] - s1[1] * s1[2]) * (s2[0] * s2[3] - s2[1] * s2[2]);
    let want = 0.25 + 0.09 + (s1[0] + s1[3]) + (s2[0] + s2[3]) - 2.0 * (tr_prod + 2.0 * dets.sqrt()).sqrt();
    assert!((frechet_distance(&a, &b) - want).abs() < 1e-10, "{} vs {want}", frechet_distance(&a, &b));
    assert!(frechet_distance(&a, &a).abs() < 1e-10);
    assert!((frechet_distance(&a, &b) - frechet_distance(&b, &a)).abs() < 1e-10);
}

#[test]
fn fitted_gaussians_converge_and_singular_fits_stay_finite() {
    let mut rng = SplitMix64::new(5);
    let mut draw = |n: usize, shift: f64| -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let z: f64 = rng.normal();
                let w: f64 = rng.normal();
                vec![z + shift, 0.5 * z + w]
            })
            .collect()
    };
    let truth = gaussian(&[0.0, 0.0], &[1.0, 0.5, 0.5, 1.25]);
    let fit = Gaussian::fit(&draw(20_000, 0.0)).unwrap();
    assert!(frechet_distance(&fit, &truth) < 0.01, "{}", frechet_distance(&fit, &truth));
    let shifted = Gaussian::fit(&draw(20_000, 1.0)).unwrap();
    assert!((frechet_distance(&shifted, &truth) - 1.0).abs() < 0.05);
    // Three samples of 5 features: a singular covariance.
    let few: Vec<Vec<f64>> = (0..3).map(|i| (0..5).map(|j| ((i * 5 + j) as f64).sin()).collect()).collect();
    let d = frechet_distance(
        &Gaussian::fit(&few).unwrap(),
        &Gaussian::fit(&few[..2].iter().cloned().chain([vec![0.0; 5]]).collect::<Vec<_>>()).unwrap(),
    );
    assert!(d.is_finite() && d >= -1e-9, "{d}");
    assert!(Gaussian::fit(&few[..1]).is_err());
}

#[test]
fn inception_score_and_confident_share_at_their_extremes() {
    let one_hot: Vec<Vec<f64>> = (0..40).map(|i| (0..4).map(|k| f64::from(u8::from(i % 4 == k))).collect()).collect();
    assert!((inception_score(&one_hot) - 4.0).abs() < 1e-12);
    assert_eq!(confident_share(&one_hot, 0.9), 1.0);
    let uniform = vec![vec![0.25; 4]; 10];
    assert!((inception_score(&uniform) - 1.0).abs() < 1e-12);
    assert_eq!(confident_share(&uniform, 0.9), 0.0);
}

/// An unbalanced, soft case by hand: rows `[1, 0]` ×2, `[0.5, 0.5]`, `[0.2, 0.8]` have the
/// marginal `p(y) = [0.675, 0.325]`, and `IS = exp(¼ Σ_x Σ_y p(y|x) ln(p(y|x)/p(y)))`.
#[test]
fn inception_score_of_an_unbalanced_case_by_hand() {
    let rows = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.5, 0.5], vec![0.2, 0.8]];
    let (m0, m1) = (0.675, 0.325);
    let kl = 2.0 * (1.0f64 / m0).ln()
        + 0.5 * (0.5f64 / m0).ln()
        + 0.5 * (0.5f64 / m1).ln()
        + 0.2 * (0.2f64 / m0).ln()
        + 0.8 * (0.8f64 / m1).ln();
    assert!(
        (inception_score(&rows) - (kl / 4.0).exp()).abs() < 1e-12,
        "{} vs {}",
        inception_score(&rows),
        (kl / 4.0).exp()
    );
    assert_eq!(confident_share(&rows, 0.9), 0.5);
}

/// The digits classifier learns (over 90% test accuracy in 300 steps), and its saved weights
/// load back to the same outputs; a corrupted weight file is refused.
#[test]
fn classifier_trains_saves_and_loads() {
    let device = Default::default();
    let run = RunConfig::digits();
    let (train, test) = run.data.load(run.train.seed).unwrap();
    let config = ClassifierConfig { steps: 300, ..ClassifierConfig::default() };
    let (model, accuracy) = classifier::train::<Autodiff<Cpu>>(&config, &train, &test, &device, |_, _| {}).unwrap();
    assert!(accuracy > 0.9, "test accuracy {accuracy}");
    let dir = tempfile::tempdir().unwrap();
    let info = ClassifierInfo {
        config,
        data: run.data.clone(),
        split_seed: 0,
        image_shape: train.shape(),
        classes: 10,
        test_accuracy: accuracy,
        weights: vdm_backends::files::FileDigest::of(&[]),
    };
    classifier::save(dir.path(), &model, info).unwrap();
    let (loaded, info) = classifier::load::<Cpu>(dir.path(), &device).unwrap();
    assert!((info.test_accuracy - accuracy).abs() < 1e-12);
    assert_eq!(
        loaded.features_and_probabilities(&test, 64, &device),
        model.features_and_probabilities(&test, 64, &device)
    );

    // The FID pipeline on its features: the test set against itself is 0; training images score
    // far below uniform noise images against the test set.
    let of = |images: &ImageSet| model.features_and_probabilities(images, 64, &device);
    let reference = of(&test);
    let report = |images: &ImageSet| {
        let (f, p) = of(images);
        QualityReport::new((&f, &p), (&reference.0, &reference.1)).unwrap()
    };
    let itself = report(&test);
    assert!(itself.fid.abs() < 1e-6 * reference.0.len() as f64, "FID of the test set against itself: {}", itself.fid);
    assert_eq!(
        (itself.inception_score, itself.confident_share),
        (itself.reference_inception_score, itself.reference_confident_share)
    );
    let training = report(&train.select(&(0..300).collect::<Vec<_>>()));
    let mut rng = SplitMix64::new(5);
    let noise = ImageSet::new(
        (0..300 * test.features()).map(|_| (rng.next_u64() % 17 * 255 / 16) as u8).collect(),
        test.shape(),
    );
    let noise = report(&noise);
    assert!(noise.fid > 3.0 * training.fid, "noise FID {} against training-image FID {}", noise.fid, training.fid);
    assert!(training.confident_share > noise.confident_share && training.inception_score > noise.inception_score);
    let weights = dir.path().join("weights.mpk");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    assert!(classifier::load::<Cpu>(dir.path(), &device).unwrap_err().to_string().contains("SHA-256"));
}
