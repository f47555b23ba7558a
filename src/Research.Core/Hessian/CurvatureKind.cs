namespace Research.Core.Hessian;

/// <summary>Which curvature matrix of the mean loss L(θ) = (1/N) Σᵢ ℓᵢ(θ) a <see cref="CurvatureOperator"/> multiplies by.</summary>
public enum CurvatureKind
{
    /// <summary>The Hessian ∇²L, by double backward (Pearlmutter 1994). Indefinite in general; where the model has ReLU
    /// kinks it is the almost-everywhere second derivative (see <see cref="CurvatureOperator"/>).</summary>
    Hessian,

    /// <summary>The generalised Gauss-Newton matrix G = (1/N) Σᵢ Jᵢᵀ H_out,i Jᵢ (Schraudolph 2002), with Jᵢ the Jacobian
    /// of item i's logits and H_out,i = diag(p) − ppᵀ the Hessian of the softmax cross-entropy in the logits. Positive
    /// semi-definite; it is the Hessian without the terms that carry the logits' own curvature.</summary>
    GaussNewton,
}

/// <summary>The floating-point type the curvature products are computed in.</summary>
public enum CurvaturePrecision
{
    /// <summary>float32: the model as trained; the products' rounding error is ~1e-7 relative.</summary>
    Float32,

    /// <summary>float64: a replica of the model cast to double (the caller's model is never cast), for tests and for
    /// quadratic forms whose terms cancel.</summary>
    Float64,
}
