/// Hessian-vector products by double backward, the curvature operator over a task's data (Hessian and Gauss-Newton),
/// Lanczos and Hutchinson, checked against finite differences, closed forms and explicitly formed matrices. Every
/// comparison states its tolerance; "relative" means max |a − b| / max |b|.
module Research.Tests.HessianTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open type TorchSharp.torch
open Research.Abstractions
open Research.Core.Hessian
open Research.Core.Models
open Research.Core.Tasks

/// inputs → fc1 → activation → fc2, in float64.
type private TwoLayer(inputs: int64, hidden: int64, outputs: int64, activation: Tensor -> Tensor) as this =
    inherit nn.Module<Tensor, Tensor>("two_layer")
    let fc1 = nn.Linear(inputs, hidden, dtype = float64)
    let fc2 = nn.Linear(hidden, outputs, dtype = float64)
    do this.RegisterComponents()
    override _.forward x = fc2.call (activation (fc1.call x))

/// inputs → fc → tanh → head in float64, with a Linear `unused` the forward pass never touches.
type private WithUnused(inputs: int64, hidden: int64, outputs: int64) as this =
    inherit nn.Module<Tensor, Tensor>("with_unused")
    let fc = nn.Linear(inputs, hidden, dtype = float64)
    let unused = nn.Linear(inputs, outputs, dtype = float64)
    let head = nn.Linear(hidden, outputs, dtype = float64)
    do this.RegisterComponents()
    override _.forward x = head.call (torch.tanh (fc.call x))
    /// Referenced so that the layer is a field, which RegisterComponents registers.
    member _.Unused = unused

/// inputs → fc → tanh → dropout(0.5) → head, in float64.
type private WithDropout(inputs: int64, hidden: int64, outputs: int64) as this =
    inherit nn.Module<Tensor, Tensor>("with_dropout")
    let fc = nn.Linear(inputs, hidden, dtype = float64)
    let drop = nn.Dropout(0.5)
    let head = nn.Linear(hidden, outputs, dtype = float64)
    do this.RegisterComponents()
    override _.forward x = head.call (drop.call (torch.tanh (fc.call x)))

/// inputs → head, in float64: logits linear in θ, so the Hessian of the cross-entropy is its Gauss-Newton matrix.
type private Linear1(inputs: int64, outputs: int64) as this =
    inherit nn.Module<Tensor, Tensor>("linear1")
    let head = nn.Linear(inputs, outputs, dtype = float64)
    do this.RegisterComponents()
    override _.forward x = head.call x

/// One parameter θ ∈ ℝⁿ whose output for a batch of B items is the per-item "loss" ½θᵀAθ, B times: with the operator's
/// loss taken as the sum of the outputs, L(θ) = ½θᵀAθ exactly.
type private Quadratic(a: Tensor, theta: Tensor) as this =
    inherit nn.Module<Tensor, Tensor>("quadratic")
    let theta = nn.Parameter(theta.clone())
    do this.RegisterComponents()
    override _.forward x = (0.5 * theta.dot(a.mv theta)).expand([| x.shape[0] |])
    member _.Theta = theta

let private sumOfOutputs = Func<Tensor, Batch, Tensor>(fun out _ -> out.sum())

let private tanhNet (seed: uint64) inputs hidden outputs =
    let m = new TwoLayer(inputs, hidden, outputs, fun t -> torch.tanh t)
    Init.LinearDefault(m, new torch.Generator(seed))
    m

let private reluNet (seed: uint64) inputs hidden outputs =
    let m = new TwoLayer(inputs, hidden, outputs, fun t -> nn.functional.relu t)
    Init.LinearDefault(m, new torch.Generator(seed))
    m

/// Batches of the given sizes, consecutive rows of x and y (views).
let private split (x: Tensor) (y: Tensor) (sizes: int64 list) =
    let starts = List.scan (+) 0L sizes
    List.map2 (fun start size -> Batch(x.narrow(0L, start, size), y.narrow(0L, start, size))) (List.take sizes.Length starts) sizes

/// Gaussian inputs and uniform labels in float64.
let private classification (seed: uint64) (n: int64) (inputs: int64) (classes: int64) =
    let g = new torch.Generator(seed)
    torch.randn([| n; inputs |], dtype = float64, generator = g), torch.randint(0L, classes, [| n |], generator = g)

let private relative (a: Tensor) (b: Tensor) =
    use _ = torch.NewDisposeScope()
    (a - b).abs().max().item<float>() / b.abs().max().item<float>()

/// M formed column by column: M eᵢ for each unit vector (n products).
let private explicitMatrix (op: CurvatureOperator) =
    use _ = torch.NewDisposeScope()
    let eye = torch.eye(op.Dimension, dtype = float64)
    torch.stack([| for i in 0L .. op.Dimension - 1L -> op.Apply(eye[i]) |], 1L).MoveToOuterDisposeScope()

let private randomUnit (n: int64) (g: torch.Generator) =
    let v = torch.randn([| n |], dtype = float64, generator = g)
    v.div_(v.norm())

/// The trainable parameters moved along v by ε (in place, no graph).
let private shift (model: nn.Module) (layout: ParameterLayout) (v: Tensor) (epsilon: float) =
    use _ = torch.no_grad ()
    let parts = layout.ToDictionary v
    for struct (name, p) in model.named_parameters() do
        if p.requires_grad then p.add_(parts[name].mul(epsilon.ToScalar())) |> ignore

let private abortName = "the textbook product (create_graph without retain_graph, then a second grad) aborts the process with exit 134: the hazard HessianVector.Product is built to avoid"

let tests =
    // Sequenced: the curvature products switch libtorch's flash attention off process-wide while they run (MathAttention),
    // which would change the rounding of a GPT trained by a parallel test at that moment.
    testSequenced <| testList "hessian" [
        test abortName {
            if System.Environment.GetEnvironmentVariable "RESEARCH_SHOW_ABORT" = "1" then
                // Inside the child process: the pattern that must never appear in the framework.
                let x = torch.randn([| 4L |], dtype = float64).requires_grad_(true)
                let g = torch.autograd.grad([| (x * x * x).sum() |], [| x |], create_graph = true)
                torch.autograd.grad([| g[0].sum() |], [| x |]) |> ignore
            else
                let r = Research.Tests.TestSupport.runProcessWith [ "RESEARCH_SHOW_ABORT", "1" ] (System.IO.Path.GetTempPath()) "dotnet"
                            [ System.IO.Path.Combine(Research.Tests.TestSupport.binDir, "Research.Tests.dll"); "--filter-test-case"; "the textbook product" ]
                Expect.equal r.ExitCode 134 (sprintf "aborted (SIGABRT), not an exception .NET can catch: %s" (r.Err + r.Out).[.. 300])
                Expect.stringContains (r.Err + r.Out) "Trying to backward through the graph a second time" "libtorch's reason"
        }
        test "H v of L = ½ xᵀAx equals A v (max abs error ≤ 1e-5, float64), and 200 products in a row on one parameter never reuse a double-backward graph (libtorch would abort the process)" {
            use _ = torch.NewDisposeScope()
            let n = 12L
            let g = new torch.Generator(seed = 5UL)
            let m = torch.randn([| n; n |], dtype = float64, generator = g)
            let a = m + m.t()                                           // symmetric: the Hessian of ½ xᵀAx is A
            let x = torch.randn([| n |], dtype = float64, generator = g).requires_grad_(true)
            let loss () = 0.5 * x.dot(a.matmul x)
            for i in 1 .. 200 do
                use step = torch.NewDisposeScope()
                let v = torch.randn([| n |], dtype = float64, generator = g)
                let hv = (HessianVector.Product(loss, [| x |], [| v |]))[0]
                let err = (hv - a.matmul v).abs().max().item<float>()
                if err > 1e-5 then failtestf "product %d: max abs error %g" i err
        }
        test "H is symmetric through an MLP with tanh: uᵀ(Hv) = vᵀ(Hu) within 1e-9 relative (float64)" {
            use _ = torch.NewDisposeScope()
            let g = new torch.Generator(seed = 9UL)
            let w1 = (torch.randn([| 6L; 4L |], dtype = float64, generator = g) * 0.5).requires_grad_(true)
            let w2 = (torch.randn([| 3L; 6L |], dtype = float64, generator = g) * 0.5).requires_grad_(true)
            let x = torch.randn([| 20L; 4L |], dtype = float64, generator = g)
            let y = torch.randint(0L, 3L, [| 20L |], generator = g)
            let loss () = nn.functional.cross_entropy(torch.tanh(x.matmul(w1.t())).matmul(w2.t()), y)
            let ps = [| w1; w2 |]
            let rand () = ps |> Array.map (fun p -> torch.randn(p.shape, dtype = float64, generator = g))
            let dot (a: Tensor[]) (b: Tensor[]) = Array.map2 (fun (p: Tensor) (q: Tensor) -> (p * q).sum().item<float>()) a b |> Array.sum
            for _ in 1 .. 10 do
                let u, v = rand (), rand ()
                let uhv = dot u (HessianVector.Product(loss, ps, v))
                let vhu = dot v (HessianVector.Product(loss, ps, u))
                Expect.floatClose { absolute = 1e-12; relative = 1e-9 } uhv vhu "uᵀHv = vᵀHu"
        }
        test "Hv over several batches equals the central difference (∇L(θ+εv) − ∇L(θ−εv))/2ε, ε = 1e-4, within 1e-7 relative (float64, tanh MLP 5-8-3)" {
            use _ = torch.NewDisposeScope()
            use model = tanhNet 11UL 5L 8L 3L
            let x, y = classification 12UL 21L 5L 3L
            use op = new CurvatureOperator(model, split x y [ 7L; 5L; 9L ], precision = CurvaturePrecision.Float64)
            let g = new torch.Generator(13UL)
            for _ in 1 .. 3 do
                let v = randomUnit op.Dimension g
                let hv = op.Apply v
                let epsilon = 1e-4
                shift model op.Layout v epsilon
                let struct (_, plus) = op.LossAndGradient()
                shift model op.Layout v (-2.0 * epsilon)
                let struct (_, minus) = op.LossAndGradient()
                shift model op.Layout v epsilon
                let difference = (plus - minus) / (2.0 * epsilon)
                let err = relative hv difference
                Expect.isLessThanOrEqual err 1e-7 (sprintf "max|Hv − FD| / max|FD| = %.3g" err)
        }
        test "for L = ½θᵀAθ the operator's Hv = Av within 1e-12 relative, and ∇L·Δθ + ½ΔθᵀHΔθ equals the measured L(θ+Δθ) − L(θ) within 1e-12 relative (float64)" {
            use _ = torch.NewDisposeScope()
            let n = 15L
            let g = new torch.Generator(21UL)
            let m = torch.randn([| n; n |], dtype = float64, generator = g)
            let a = m + m.t()
            let theta = torch.randn([| n |], dtype = float64, generator = g)
            let delta = torch.randn([| n |], dtype = float64, generator = g)
            let items = split (torch.zeros([| 6L; 1L |], dtype = float64)) (torch.zeros([| 6L |], dtype = int64)) [ 2L; 4L ]
            use model = new Quadratic(a, theta)
            use op = new CurvatureOperator(model, items, precision = CurvaturePrecision.Float64, lossSum = sumOfOutputs)
            for _ in 1 .. 5 do
                let v = torch.randn([| n |], dtype = float64, generator = g)
                let err = relative (op.Apply v) (a.mv v)
                Expect.isLessThanOrEqual err 1e-12 (sprintf "max|Hv − Av| / max|Av| = %.3g" err)
            let struct (loss, gradient) = op.LossAndGradient()
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } loss (0.5 * theta.dot(a.mv theta).item<float>()) "L = ½θᵀAθ"
            let predicted = gradient.dot(delta).item<float>() + 0.5 * delta.dot(op.Apply delta).item<float>()
            use moved = new Quadratic(a, theta + delta)
            use atMoved = new CurvatureOperator(moved, items, precision = CurvaturePrecision.Float64, lossSum = sumOfOutputs)
            let measured = atMoved.Loss() - loss
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } predicted measured "∇L·Δθ + ½ΔθᵀHΔθ = L(θ+Δθ) − L(θ)"
        }
        test "Lanczos' top 10 eigenvalues equal the explicit Hessian's (eigh) within 1e-9 · max|λ| on a tanh MLP of 114 parameters whose Hessian is indefinite; residuals ≤ 1e-8 · max|λ|" {
            use _ = torch.NewDisposeScope()
            use model = tanhNet 31UL 6L 10L 4L
            let x, y = classification 32UL 40L 6L 4L
            use op = new CurvatureOperator(model, split x y [ 25L; 15L ], precision = CurvaturePrecision.Float64)
            let h = explicitMatrix op
            Expect.isLessThanOrEqual (relative h (h.t())) 1e-12 "the explicit Hessian is symmetric"
            let struct (lambda, _) = torch.linalg.eigh((h + h.t()) / 2.0)
            let scale = lambda.abs().max().item<float>()
            Expect.isLessThan (lambda[0L].item<float>()) (-1e-3 * scale) "the Hessian has a clearly negative eigenvalue"
            use result = Lanczos.TopEigenpairs(op.AsFunction(), op.Dimension, 10, new torch.Generator(33UL), tolerance = 1e-8)
            Expect.isTrue result.Converged (sprintf "converged (residuals %A)" result.Residuals)
            let expected = lambda.flip(0L).narrow(0L, 0L, 10L).data<float>().ToArray()
            for i in 0 .. 9 do
                let err = Operators.abs (result.Eigenvalues[i] - expected[i]) / scale
                Expect.isLessThanOrEqual err 1e-9 (sprintf "eigenvalue %d: %.12g vs %.12g (|Δ| / max|λ| = %.3g)" i result.Eigenvalues[i] expected[i] err)
                let v = result.Eigenvectors[Operators.int64 i]
                let residual = (h.mv v - v * result.Eigenvalues[i]).norm().item<float>() / scale
                Expect.isLessThanOrEqual residual 1e-8 (sprintf "‖Hv − λv‖ / max|λ| of pair %d by the explicit H = %.3g" i residual)
            Expect.equal result.ResidualSource ResidualSource.Recomputed "residuals recomputed with products"
            Expect.equal result.Products (Operators.int64 result.Iterations + 10L) "one product per step and one per Ritz vector"
        }
        test "Lanczos returns the largest ALGEBRAIC eigenvalues: A with eigenvalues −50, −40, −30 and 10 − 0.2i (i < 57) gives 10, 9.8, 9.6, 9.4, 9.2 within 1e-9, never the larger-magnitude negatives" {
            use _ = torch.NewDisposeScope()
            let g = new torch.Generator(41UL)
            let spectrum = Array.append [| -50.0; -40.0; -30.0 |] [| for i in 0 .. 56 -> 10.0 - 0.2 * Operators.float i |]
            let n = Operators.int64 spectrum.Length
            let struct (q, _) = torch.linalg.qr(torch.randn([| n; n |], dtype = float64, generator = g))
            let a = q.matmul(torch.diag(torch.tensor(spectrum, dtype = float64))).matmul(q.t())
            let a = (a + a.t()) / 2.0
            use model = new Quadratic(a, torch.randn([| n |], dtype = float64, generator = g))
            use op = new CurvatureOperator(model, split (torch.zeros([| 3L; 1L |], dtype = float64)) (torch.zeros([| 3L |], dtype = int64)) [ 3L ],
                                           precision = CurvaturePrecision.Float64, lossSum = sumOfOutputs)
            use result = Lanczos.TopEigenpairs(op.AsFunction(), n, 5, new torch.Generator(42UL), tolerance = 1e-10)
            Expect.isTrue result.Converged (sprintf "converged (residuals %A)" result.Residuals)
            for i in 0 .. 4 do
                Expect.floatClose { absolute = 1e-9; relative = 0.0 } result.Eigenvalues[i] (10.0 - 0.2 * Operators.float i) (sprintf "eigenvalue %d" i)
        }
        test "Hutchinson's trace of the Hessian is within 4 standard errors of the explicit trace with 30 and with 480 Rademacher probes, and 16× the probes shrink the standard error below half (float64)" {
            use _ = torch.NewDisposeScope()
            use model = tanhNet 51UL 6L 10L 4L
            let x, y = classification 52UL 40L 6L 4L
            use op = new CurvatureOperator(model, split x y [ 40L ], precision = CurvaturePrecision.Float64)
            let trace = (explicitMatrix op).trace().item<float>()
            let g = new torch.Generator(53UL)
            let few = Hutchinson.Trace(op.AsFunction(), op.Dimension, 30, g)
            let many = Hutchinson.Trace(op.AsFunction(), op.Dimension, 480, g)
            for e in [ few; many ] do
                Expect.isLessThanOrEqual (Operators.abs (e.Estimate - trace)) (4.0 * e.StandardError)
                    (sprintf "%d probes: %.6g ± %.3g vs tr H = %.6g" e.Probes e.Estimate e.StandardError trace)
            Expect.isLessThan many.StandardError (few.StandardError / 2.0) (sprintf "standard error %.3g (30 probes) → %.3g (480)" few.StandardError many.StandardError)
        }
        test "the Gauss-Newton product equals (1/N) Jᵀ H_out J v with J from per-output gradients and H_out = diag(p) − ppᵀ, within 1e-10 relative; the GGN is PSD (eigenvalues ≥ −1e-10) where the Hessian is not; for logits linear in θ the Hessian equals the GGN within 1e-10 (float64)" {
            use _ = torch.NewDisposeScope()
            use model = reluNet 61UL 4L 6L 3L
            let x, y = classification 62UL 9L 4L 3L
            use op = new CurvatureOperator(model, split x y [ 4L; 5L ], CurvatureKind.GaussNewton, CurvaturePrecision.Float64)
            let parameters = [| for struct (_, p) in model.named_parameters() -> p :> Tensor |]
            let logits = model.forward x
            let jacobian =
                torch.stack([| for i in 0L .. 8L do
                                 for c in 0L .. 2L ->
                                     op.Layout.Flatten(Seq.toArray (torch.autograd.grad([| logits[i, c] |], parameters, retain_graph = true))) |], 0L)
            let p = logits.detach().softmax(-1L)
            let hOut = torch.block_diag([| for i in 0L .. 8L -> torch.diag(p[i]) - torch.outer(p[i], p[i]) |])
            let ggn = jacobian.t().matmul(hOut).matmul(jacobian) / 9.0
            let g = new torch.Generator(63UL)
            for _ in 1 .. 5 do
                let v = torch.randn([| op.Dimension |], dtype = float64, generator = g)
                let err = relative (op.Apply v) (ggn.mv v)
                Expect.isLessThanOrEqual err 1e-10 (sprintf "max|Gv − JᵀH_outJv/N| / max = %.3g" err)
            let struct (ggnSpectrum, _) = torch.linalg.eigh(explicitMatrix op)
            Expect.isGreaterThanOrEqual (ggnSpectrum[0L].item<float>()) -1e-10 "the GGN's smallest eigenvalue"
            use hessian = new CurvatureOperator(model, split x y [ 4L; 5L ], precision = CurvaturePrecision.Float64)
            let struct (hSpectrum, _) = torch.linalg.eigh(explicitMatrix hessian)
            Expect.isLessThan (hSpectrum[0L].item<float>()) -1e-6 "the Hessian of the same ReLU net has a negative eigenvalue"
            use linear = new Linear1(4L, 3L)
            Init.LinearDefault(linear, new torch.Generator(64UL))
            use linearGgn = new CurvatureOperator(linear, split x y [ 9L ], CurvatureKind.GaussNewton, CurvaturePrecision.Float64)
            use linearHessian = new CurvatureOperator(linear, split x y [ 9L ], CurvatureKind.Hessian, CurvaturePrecision.Float64)
            let v = torch.randn([| linear.parameters() |> Seq.sumBy (fun p -> p.numel()) |], dtype = float64, generator = g)
            let err = relative (linearHessian.Apply v) (linearGgn.Apply v)
            Expect.isLessThanOrEqual err 1e-10 (sprintf "linear logits: max|Hv − Gv| / max|Gv| = %.3g" err)
        }
        test "the operator over batches of sizes 1, 4, 11 equals it over the 16 items in one batch (Hv, Gv, L, ∇L within 1e-10 relative, float64), an ignored target (−100) counting in neither" {
            use _ = torch.NewDisposeScope()
            use model = tanhNet 71UL 5L 7L 3L
            let x, y = classification 72UL 16L 5L 3L
            y[6L] <- torch.tensor Batch.IgnoreIndex
            let g = new torch.Generator(73UL)
            for kind in [ CurvatureKind.Hessian; CurvatureKind.GaussNewton ] do
                use cut = new CurvatureOperator(model, split x y [ 1L; 4L; 11L ], kind, CurvaturePrecision.Float64)
                use whole = new CurvatureOperator(model, split x y [ 16L ], kind, CurvaturePrecision.Float64)
                Expect.equal cut.Items 15L "N counts the 15 items whose target is not −100"
                let v = torch.randn([| cut.Dimension |], dtype = float64, generator = g)
                let err = relative (cut.Apply v) (whole.Apply v)
                Expect.isLessThanOrEqual err 1e-10 (sprintf "%A: max|Mv(1,4,11) − Mv(16)| / max = %.3g" kind err)
                let struct (l1, g1) = cut.LossAndGradient()
                let struct (l2, g2) = whole.LossAndGradient()
                Expect.floatClose { absolute = 0.0; relative = 1e-10 } l1 l2 "L"
                Expect.isLessThanOrEqual (relative g1 g2) 1e-10 "∇L"
        }
        test "a causal LM with padding, float64 replica of a float32 GPT: the operator over batches of 2 and 3 sequences equals it over the 5 in one (Hv, Gv, ∇L within 1e-10 relative), L is the evaluation's mean loss over predicted tokens (within 1e-6), the GPT stays float32" {
            use _ = torch.NewDisposeScope()
            let shape = GptShape(Vocab = 7L, MaxLen = 4L, Width = 8L, Heads = 2L, Layers = 1L)
            use gpt = Gpt.Create(shape, new torch.Generator(81UL))
            let replica = Func<nn.Module<Tensor, Tensor>>(fun () -> Gpt.Create(shape, new torch.Generator(82UL)) :> nn.Module<Tensor, Tensor>)
            let ids = torch.randint(0L, 7L, [| 5L; 4L |], generator = new torch.Generator(83UL))
            let lengths = [ 4L; 2L; 3L; 1L; 4L ]
            let mask = torch.zeros([| 5L; 4L |], dtype = int64)
            let targets = ids.clone()
            for i, n in List.indexed lengths do
                mask[Operators.int64 i].narrow(0L, 0L, n).fill_(1L.ToScalar()) |> ignore
                if n < 4L then targets[Operators.int64 i].narrow(0L, n, 4L - n).fill_(Batch.IgnoreIndex.ToScalar()) |> ignore
            let all = Batch([ KeyValuePair(Batch.InputIds, ids); KeyValuePair(Batch.AttentionMask, mask); KeyValuePair(Batch.Targets, targets) ])
            let task = CausalLmTask()
            let g = new torch.Generator(84UL)
            for kind in [ CurvatureKind.Hessian; CurvatureKind.GaussNewton ] do
                use cut = new CurvatureOperator(gpt, [ all.Narrow(0L, 2L); all.Narrow(2L, 3L) ], kind, CurvaturePrecision.Float64, task, replica)
                use whole = new CurvatureOperator(gpt, [ all ], kind, CurvaturePrecision.Float64, task, replica)
                Expect.equal cut.Items 9L "N = Σ (length − 1) = 3 + 1 + 2 + 0 + 3 predicted tokens"
                let v = torch.randn([| cut.Dimension |], dtype = float64, generator = g)
                let mv = cut.Apply v
                Expect.equal mv.dtype float64 "the product comes back in v's dtype"
                let err = relative mv (whole.Apply v)
                Expect.isLessThanOrEqual err 1e-10 (sprintf "%A: max|Mv(2,3) − Mv(5)| / max = %.3g" kind err)
                let struct (l1, g1) = cut.LossAndGradient()
                let struct (_, g2) = whole.LossAndGradient()
                Expect.isLessThanOrEqual (relative g1 g2) 1e-10 "∇L"
                let struct (sum, _, items) = task.Score(ModelInput.Logits(gpt, all), all)
                Expect.floatClose { absolute = 0.0; relative = 1e-6 } l1 (sum / Operators.float items) "L = evaluation's Σℓ / N"
            for struct (_, p) in gpt.named_parameters() do Expect.equal p.dtype float32 "the caller's GPT is never cast"
        }
        test "200 products in a row (Hessian and Gauss-Newton, a ReLU MLP over 3 batches) neither abort nor leave a native tensor behind: the live-tensor count after product 200 equals the count after product 1" {
            use _ = torch.NewDisposeScope()
            use model = reluNet 91UL 6L 12L 4L
            let x, y = classification 92UL 30L 6L 4L
            let data = split x y [ 10L; 10L; 10L ]
            use hessian = new CurvatureOperator(model, data, precision = CurvaturePrecision.Float64)
            use ggn = new CurvatureOperator(model, data, CurvatureKind.GaussNewton, CurvaturePrecision.Float64)
            let v = torch.randn([| hessian.Dimension |], dtype = float64, generator = new torch.Generator(93UL))
            let product () =
                use _ = torch.NewDisposeScope()
                hessian.Apply v |> ignore
                ggn.Apply v |> ignore
            product ()
            let after1 = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            for _ in 2 .. 200 do product ()
            Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount after1 "live tensors on this thread"
            Expect.equal hessian.Products 200L "products counted"
        }
        test "a trainable parameter the loss never uses gets zero curvature, not an error: its part of Hv and Gv is exactly 0 while the used layers' parts are not (float64)" {
            use _ = torch.NewDisposeScope()
            use model = new WithUnused(4L, 5L, 3L)
            Init.LinearDefault(model, new torch.Generator(97UL))
            let x, y = classification 98UL 12L 4L 3L
            let v = torch.randn([| (ParameterLayout.Of model).Size |], dtype = float64, generator = new torch.Generator(99UL))
            for kind in [ CurvatureKind.Hessian; CurvatureKind.GaussNewton ] do
                use op = new CurvatureOperator(model, split x y [ 5L; 7L ], kind, CurvaturePrecision.Float64)
                let parts = op.Layout.ToDictionary(op.Apply v)
                for name in [ "unused.weight"; "unused.bias" ] do
                    Expect.equal (parts[name].abs().max().item<float>()) 0.0 (sprintf "%A: %s" kind name)
                Expect.isGreaterThan (parts["fc.weight"].abs().max().item<float>()) 0.0 (sprintf "%A: fc.weight has curvature" kind)
        }
        test "products run in eval mode and restore the mode: with dropout 0.5 a model in training mode gives the same Hv twice and the same as in eval mode, and is training again afterwards (exact, float64)" {
            use _ = torch.NewDisposeScope()
            use model = new WithDropout(4L, 6L, 3L)
            Init.LinearDefault(model, new torch.Generator(101UL))
            let x, y = classification 102UL 10L 4L 3L
            use op = new CurvatureOperator(model, split x y [ 10L ], precision = CurvaturePrecision.Float64)
            let v = torch.randn([| op.Dimension |], dtype = float64, generator = new torch.Generator(103UL))
            model.train()
            let first = op.Apply v
            let second = op.Apply v
            Expect.isTrue model.training "training mode restored"
            model.eval()
            let evaluated = op.Apply v
            Expect.isTrue (torch.eq(first, second).all().item<bool>()) "the same product twice: no dropout mask drawn"
            Expect.isTrue (torch.eq(first, evaluated).all().item<bool>()) "the product of the model in eval mode"
        }
        test "the flat layout follows named_parameters order over trainable parameters only: Split then Flatten is the identity, a frozen parameter is left out, a Mask selects whole parameters" {
            use _ = torch.NewDisposeScope()
            use model = tanhNet 95UL 3L 4L 2L
            for struct (name, p) in model.named_parameters() do if name = "fc1.bias" then p.requires_grad <- false
            let layout = ParameterLayout.Of model
            Expect.sequenceEqual layout.Names [ "fc1.weight"; "fc2.weight"; "fc2.bias" ] "names, frozen fc1.bias left out"
            Expect.equal layout.Size (12L + 8L + 2L) "n"
            let theta = layout.Parameters model
            let back = layout.Flatten(layout.Split theta)
            Expect.isTrue (torch.eq(theta, back).all().item<bool>()) "Flatten(Split θ) = θ"
            let byName = layout.ToDictionary theta
            let struct (_, bias) = model.named_parameters() |> Seq.find (fun struct (n, _) -> n = "fc2.bias")
            Expect.isTrue (torch.eq(byName["fc2.bias"], bias).all().item<bool>()) "fc2.bias by name"
            let mask = layout.Mask(fun n -> n.StartsWith "fc2")
            Expect.equal (mask.sum().item<float>()) 10.0 "fc2's 8 + 2 entries"
            let struct (_, length) = layout.RangeOf "fc2.bias"
            Expect.equal length 2L "range length"
        }
    ]
