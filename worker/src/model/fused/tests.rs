use candle_core::{D, Device, Tensor, Var};
use wf_shared::model::Activation;

use super::activation::*;
use super::attention::*;
use super::bias::*;
use super::group::*;
use super::hidden::*;
use super::kernel::*;
use super::matmul::*;
use super::norm::*;

/// Standard normal values times `scale` plus `shift`.
fn spread(shape: &[usize], seed: u64, scale: f32, shift: f32) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<f32> =
        (0..n).map(|_| scale * Distribution::<f32>::sample(&StandardNormal, &mut rng) + shift).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap_or_else(|e| panic!("tensor: {e}"))
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    spread(shape, seed, 1.0, 0.0)
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>());
    diff.unwrap_or_else(|e| panic!("difference: {e}"))
}

/// Runs `fused` and `composed` on the same variables with a random upstream
/// gradient, and asserts that outputs and every input's gradient agree.
fn check(
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    composed: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    tolerance: f32,
) {
    let run = |f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>| {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap_or_else(|e| panic!("{e}"))).collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&tensors).unwrap_or_else(|e| panic!("forward: {e}"));
        let upstream = random(out.dims(), 99);
        let grads = (&out * &upstream)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .unwrap_or_else(|e| panic!("backward: {e}"));
        let grads: Vec<Tensor> = tensors
            .iter()
            .map(|t| grads.get(t).cloned().unwrap_or_else(|| panic!("an input got no gradient")))
            .collect();
        (out, grads)
    };
    let (fused_out, fused_grads) = run(&fused);
    let (composed_out, composed_grads) = run(&composed);
    assert_eq!(fused_out.dims(), composed_out.dims());
    let out_diff = max_difference(&fused_out, &composed_out);
    assert!(out_diff < tolerance, "outputs differ by {out_diff}");
    for (i, (a, b)) in fused_grads.iter().zip(&composed_grads).enumerate() {
        assert_eq!(a.dims(), b.dims(), "gradient {i} shape");
        let diff = max_difference(a, b);
        assert!(diff < tolerance, "gradient of input {i} differs by {diff}");
    }
}

#[test]
fn exp_is_accurate_over_the_float_range() {
    for i in -870..=880 {
        let x = i as f32 / 10.0;
        let (fast, exact) = (exp(x), x.exp());
        assert!(((fast - exact) / exact).abs() < 5e-7, "exp({x}) = {fast}, not {exact}");
    }
    assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
    assert!(exp(1000.0).is_finite());
}

#[test]
fn group_means_match_candles_mean_over_the_middle_dimension() {
    let fused = |t: &[Tensor]| group_mean(&t[0], 6);
    let composed = |t: &[Tensor]| t[0].reshape((70, 6, 37))?.mean(1);
    check(&[spread(&[420, 37], 2, 1.0, 0.0)], fused, composed, 1e-5);
    assert!(group_mean(&Tensor::zeros((7, 3), candle_core::DType::F32, &Device::Cpu).expect("zeros"), 2).is_err());
}

#[test]
fn gelu_matches_candles() {
    check(&[spread(&[37, 70], 1, 3.0, 0.0)], |t| gelu(&t[0]), |t| t[0].gelu(), 1e-5);
}

#[test]
fn dropout_masks_keep_the_asked_share_and_depend_on_the_key() {
    let mask = Dropout::new(0.9, 7).mask(100_000);
    let kept = mask.iter().filter(|m| **m > 0.0).count() as f64 / mask.len() as f64;
    assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
    assert!(mask.iter().all(|m| *m == 0.0 || (*m - 1.0 / 0.9).abs() < 1e-6));
    assert_eq!(mask, Dropout::new(0.9, 7).mask(100_000), "the same key gives the same mask");
    let other = Dropout::new(0.9, 8).mask(100_000);
    let differ = mask.iter().zip(&other).filter(|(a, b)| a != b).count();
    // Independent masks differ where exactly one keeps: 2 · 0.9 · 0.1 = 18%.
    assert!((15_000..21_000).contains(&differ), "{differ} elements differ");
    // Neighbouring elements are not correlated: pairs both dropped ~1%.
    let both = mask.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count();
    assert!((700..1_300).contains(&both), "{both} neighbouring pairs both dropped");
}

#[test]
fn hidden_layers_match_the_composed_ops_for_every_activation_with_and_without_dropout() {
    for activation in [Activation::Relu, Activation::Gelu, Activation::Silu] {
        for dropout in [None, Some(Dropout::new(0.8, 0xfeed_beef_0123_4567))] {
            hidden_layer_matches_the_composed_ops([67, 301], activation, dropout, 1e-4);
        }
    }
}

/// Above `HIDDEN_SERIAL_MAX` elements the rows are split over rayon's pool, each task
/// keying its dropout mask from its first row.
#[test]
fn large_hidden_layers_split_over_threads_match_the_composed_ops() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap_or_else(|e| panic!("{e}"));
    pool.install(|| {
        assert!(hidden_rows_per_task(40 * 30_000, 30_000).is_some(), "this layer is split");
        for activation in [Activation::Relu, Activation::Gelu] {
            let dropout = Some(Dropout::new(0.8, 0xfeed_beef_0123_4567));
            // The bias gradient sums 30,000 terms: float rounding reaches ~2e-4.
            hidden_layer_matches_the_composed_ops([40, 30_000], activation, dropout, 1e-3);
        }
    });
}

fn hidden_layer_matches_the_composed_ops(
    shape: [usize; 2],
    activation: Activation,
    dropout: Option<Dropout>,
    tolerance: f32,
) {
    let inputs = [spread(&shape, 4, 2.0, 0.1), random(&[shape[0], 1], 5)];
    let composed = |t: &[Tensor]| {
        let x = t[0].broadcast_add(&t[1])?;
        let x = match activation {
            Activation::Relu => x.relu()?,
            Activation::Gelu => x.gelu()?,
            Activation::Silu => x.silu()?,
        };
        match dropout {
            Some(_) => {
                let mask = Dropout::new(0.8, 0xfeed_beef_0123_4567).mask(x.elem_count());
                x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
            }
            None => Ok(x),
        }
    };
    check(&inputs, |t| hidden_layer(&t[0], &t[1], activation, dropout), composed, tolerance);
}

#[test]
fn a_hidden_layer_refuses_a_bias_of_the_wrong_height() {
    let result = hidden_layer(&random(&[4, 9], 1), &random(&[5, 1], 2), Activation::Relu, None);
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("does not match 5 biases"), "{message}");
}

#[test]
fn a_product_with_data_matches_candles_and_gives_the_data_no_gradient() {
    let (w, x) = (Var::from_tensor(&random(&[33, 17], 1)).unwrap_or_else(|e| panic!("{e}")), random(&[17, 45], 2));
    let gradients = |product: &Tensor| {
        let upstream = random(product.dims(), 3);
        (product * &upstream).and_then(|l| l.sum_all()?.backward()).unwrap_or_else(|e| panic!("{e}"))
    };
    for (fused, composed) in [
        (matmul(w.as_tensor(), &x), w.as_tensor().matmul(&x)),
        (
            matmul(&x.t().unwrap_or_else(|e| panic!("{e}")), &w.t().unwrap_or_else(|e| panic!("{e}"))),
            (x.t().and_then(|t| t.matmul(&w.t()?))),
        ),
    ] {
        let (fused, composed) = (fused.unwrap_or_else(|e| panic!("{e}")), composed.unwrap_or_else(|e| panic!("{e}")));
        assert!(max_difference(&fused, &composed) < 1e-5);
        let (fused_grads, composed_grads) = (gradients(&fused), gradients(&composed));
        let (a, b) = (fused_grads.get(w.as_tensor()), composed_grads.get(w.as_tensor()));
        let (a, b) =
            (a.unwrap_or_else(|| panic!("no weight gradient")), b.unwrap_or_else(|| panic!("no weight gradient")));
        assert!(max_difference(a, b) < 1e-4);
        assert!(fused_grads.get(&x).is_none(), "the data got a gradient");
    }
    // Both inputs tracked: Candle's own product, both gradients.
    check(&[random(&[6, 5], 4), random(&[5, 7], 5)], |t| matmul(&t[0], &t[1]), |t| t[0].matmul(&t[1]), 1e-5);
    let wrong = matmul(&random(&[3, 4], 1), &random(&[5, 2], 2)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(wrong.contains("do not match"), "{wrong}");
}

#[test]
fn layer_norm_matches_the_composed_ops() {
    let composed = |t: &[Tensor]| {
        let centred = t[0].broadcast_sub(&t[0].mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(variance + 1e-5)?.sqrt()?)?.broadcast_mul(&t[1])?.broadcast_add(&t[2])
    };
    let inputs = [spread(&[5, 130, 24], 1, 2.0, 1.0), random(&[24], 2), random(&[24], 3)];
    check(&inputs, |t| layer_norm(&t[0], &t[1], &t[2]), composed, 1e-4);
    // Rows of 67 (lane sums with a tail of 3) whose mean dwarfs their spread.
    let inputs = [spread(&[130, 67], 4, 1.0, 1000.0), random(&[67], 5), random(&[67], 6)];
    check(&inputs, |t| layer_norm(&t[0], &t[1], &t[2]), composed, 2e-3);
}

#[test]
fn bias_add_matches_broadcasting() {
    let inputs = [random(&[300, 6, 8], 1), random(&[6, 8], 2)];
    check(&inputs, |t| add_bias(&t[0], &t[1]), |t| t[0].broadcast_add(&t[1]), 1e-4);
    let inputs = [random(&[513, 16], 3), random(&[16], 4)];
    check(&inputs, |t| add_bias(&t[0], &t[1]), |t| t[0].broadcast_add(&t[1]), 1e-4);
}

#[test]
fn attention_matches_the_composed_ops() {
    let (batch, seq, d, heads) = (70, 6, 16, 4);
    let qkv = random(&[batch * seq, 3 * d], 5);
    let composed = |t: &[Tensor]| {
        let head_width = d / heads;
        let split = |index: usize| -> candle_core::Result<Tensor> {
            t[0].narrow(D::Minus1, index * d, d)?
                .reshape((batch, seq, heads, head_width))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_width as f64).sqrt())?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        weights.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * seq, d))
    };
    check(&[qkv], |t| attention(&t[0], seq, heads), composed, 1e-4);
}
