/// Representation probes: linear CKA (unbiased and biased HSIC), the rank agreement of cosine similarities, the linear
/// probe and the head-input representation. Each float comparison states its tolerance and why.
module Research.Tests.ProbeTests

open System
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Models
open Research.Core.Probes
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

let private gen (seed: int) = new torch.Generator(uint64 (abs (int64 seed)) + 1UL)

let private randn (g: torch.Generator) (rows: int64) (cols: int64) = torch.randn([| rows; cols |], dtype = torch.float64, generator = g)

/// A random orthogonal matrix: the Q of the QR decomposition of a Gaussian matrix.
let private orthogonal (g: torch.Generator) (d: int64) =
    let struct (q, _) = torch.linalg.qr(randn g d d)
    q

/// Y = X·A + noise: a representation related to X, so that CKA(X, Y) is neither 0 nor 1 and invariances are not trivial.
let private related (g: torch.Generator) (x: Tensor) (q: int64) =
    x.mm(randn g x.shape[1] q).add(randn g x.shape[0] q)

/// HSIC₁ (Song et al. 2012, eq. 5) written out with loops over the n×n Gram matrices, diagonals zeroed.
let private naiveHsic (x: float[,]) (y: float[,]) =
    let n = Array2D.length1 x
    let gram (a: float[,]) =
        Array2D.init n n (fun i j ->
            if i = j then 0.0 else Seq.sum (seq { for f in 0 .. Array2D.length2 a - 1 -> a[i, f] * a[j, f] }))
    let k, l = gram x, gram y
    let mutable trace, sumK, sumL, ones = 0.0, 0.0, 0.0, 0.0
    for i in 0 .. n - 1 do
        for j in 0 .. n - 1 do
            trace <- trace + k[i, j] * l[j, i]
            sumK <- sumK + k[i, j]
            sumL <- sumL + l[i, j]
    // 1ᵀK̃L̃1 = Σᵢ Σⱼ Σₘ K̃ᵢⱼ L̃ⱼₘ
    for i in 0 .. n - 1 do
        for j in 0 .. n - 1 do
            for m in 0 .. n - 1 do
                ones <- ones + k[i, j] * l[j, m]
    let n = float n
    (trace + sumK * sumL / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * ones) / (n * (n - 3.0))

let private naiveCka (x: float[,]) (y: float[,]) = naiveHsic x y / sqrt (naiveHsic x x * naiveHsic y y)

let private toArray2D (t: Tensor) =
    let rows, cols = int t.shape[0], int t.shape[1]
    let data = t.to_type(torch.float64).contiguous().data<float>().ToArray()
    Array2D.init rows cols (fun i j -> data[i * cols + j])

/// Average ranks by counting (O(m²)): rank = 1 + #smaller + (#equal − 1)/2.
let private naiveRanks (v: float[]) =
    v |> Array.map (fun x ->
        let smaller = v |> Array.filter (fun u -> u < x) |> Array.length
        let equal = v |> Array.filter (fun u -> u = x) |> Array.length
        1.0 + float smaller + float (equal - 1) / 2.0)

let private naivePearson (a: float[]) (b: float[]) =
    let ma, mb = Array.average a, Array.average b
    let cov = Array.map2 (fun x y -> (x - ma) * (y - mb)) a b |> Array.sum
    let va = a |> Array.sumBy (fun x -> (x - ma) ** 2.0)
    let vb = b |> Array.sumBy (fun y -> (y - mb) ** 2.0)
    cov / sqrt (va * vb)

/// Gaussian clusters: class c has mean `spread`·eᶜ-ish (a random direction per class), unit noise, in `d` dimensions;
/// features are then scaled and shifted per column (as raw activations are) so that standardisation matters.
let private clusters (g: torch.Generator) (n: int64) (d: int64) (classes: int64) (spread: float) =
    let centres = randn g classes d * spread
    let y = torch.randint(0L, classes, [| n |], dtype = torch.int64, generator = g)
    let x = centres.index_select(0L, y).add(randn g n d)
    let scale = torch.linspace(0.1, 20.0, d, dtype = torch.float64)
    x.mul(scale).add(torch.tensor(3.0, dtype = torch.float64)).to_type(torch.float32), y

/// f(W, b) of LinearProbe's remarks, by autograd, at the returned raw-space probe folded into standardised space.
let private standardisedGradient (fit: ProbeFit) (x: Tensor) (y: Tensor) (classes: int64) =
    use _ = torch.NewDisposeScope()
    let x = x.to_type(torch.float64)
    let mean = x.mean([| 0L |], true)
    let std = x.std(0L, false, true).clamp_min(1e-6)
    let xs = (x - mean) / std
    let w = (fit.Weight.to_type(torch.float64) * std).detach().requires_grad_(true)              // W_std = W_raw·σ
    let b = (fit.Bias.to_type(torch.float64) + fit.Weight.to_type(torch.float64).mv(mean.squeeze(0L))).detach().requires_grad_(true)
    let loss = torch.nn.functional.cross_entropy(xs.mm(w.t()) + b, y) + 0.5 * fit.L2 * w.square().sum()
    let grads = torch.autograd.grad([| loss |], [| w; b |])
    max (grads[0].abs().max().item<float>()) (grads[1].abs().max().item<float>())

let private cka =
    [
        test "unbiased and biased linear CKA of a representation with itself is 1 (within 1e-9, float64; both the feature-space and the Gram route)" {
            use _ = torch.NewDisposeScope()
            let g = gen 1
            for n, p in [ 60L, 8L; 12L, 40L ] do
                let x = randn g n p
                Expect.floatClose { absolute = 1e-9; relative = 0.0 } (LinearCka.Unbiased(x, x)) 1.0 (sprintf "unbiased, n=%d p=%d" n p)
                Expect.floatClose { absolute = 1e-9; relative = 0.0 } (LinearCka.Biased(x, x)) 1.0 (sprintf "biased, n=%d p=%d" n p)
        }
        testPropertyWithConfig { propConfig with maxTest = 25 } "CKA(XQ, 3.7·Y) = CKA(X, Y) for orthogonal Q (within 1e-9: float64 rounding of an O(1) ratio, far above 1e-15)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            let g = gen seed
            let n, p = 20L + int64 (abs seed % 30), 3L + int64 (abs seed % 7)
            let x = randn g n p
            let y = related g x 5L
            let xq = x.mm(orthogonal g p)
            let y37 = y * 3.7
            let close what a b = Expect.floatClose { absolute = 1e-9; relative = 0.0 } a b what
            close "unbiased" (LinearCka.Unbiased(xq, y37)) (LinearCka.Unbiased(x, y))
            close "biased" (LinearCka.Biased(xq, y37)) (LinearCka.Biased(x, y))
        test "CKA is NOT invariant to an anisotropic scaling: scaling one feature by 10 moves it by more than 0.01" {
            use _ = torch.NewDisposeScope()
            let g = gen 3
            let x = randn g 100L 6L
            let y = related g x 4L
            let stretch = torch.tensor([| 10.0; 1.0; 1.0; 1.0; 1.0; 1.0 |], dtype = torch.float64)
            let before, after = LinearCka.Unbiased(x, y), LinearCka.Unbiased(x * stretch, y)
            Expect.isGreaterThan (abs (after - before)) 0.01 (sprintf "CKA %.4f → %.4f" before after)
        }
        test "independent representations (n = 500, 128 features each): |unbiased CKA| < 0.05, biased CKA > 0.15" {
            // Under independence HSIC₁(K, L) has mean 0 and standard deviation ≈ √(2·tr Σx²·tr Σy²)/n, so the unbiased CKA
            // scatters around 0 with sd ≈ √2/n ≈ 0.003 at n = 500: 0.05 is over ten standard deviations. The biased
            // estimator's expectation is ≈ √(pq)/(n + p) ≈ 0.2 here: the bias the unbiased estimator removes.
            use _ = torch.NewDisposeScope()
            let g = gen 4
            let x, y = (randn g 500L 128L).to_type(torch.float32), (randn g 500L 128L).to_type(torch.float32)
            let unbiased, biased = LinearCka.Unbiased(x, y), LinearCka.Biased(x, y)
            Expect.isLessThan (abs unbiased) 0.05 (sprintf "unbiased %.4f" unbiased)
            Expect.isGreaterThan biased 0.15 (sprintf "biased %.4f" biased)
        }
        test "unbiased CKA equals a naive float64 loop over the HSIC₁ formula at n = 7 (within 1e-12; feature-space and Gram routes)" {
            use _ = torch.NewDisposeScope()
            let g = gen 5
            for p, q in [ 3L, 2L; 12L, 10L ] do
                let x, y = randn g 7L p, randn g 7L q
                let expected = naiveCka (toArray2D x) (toArray2D y)
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } (LinearCka.Unbiased(x, y)) expected (sprintf "p=%d q=%d" p q)
        }
        test "biased CKA equals tr(KHLH)/√(tr(KHKH)·tr(LHLH)) with an explicit centring matrix H = I − 11ᵀ/n (within 1e-12, float64)" {
            use _ = torch.NewDisposeScope()
            let g = gen 18
            for n, p, q in [ 30L, 4L, 3L; 9L, 20L, 15L ] do
                let x, y = randn g n p, randn g n q
                let h = torch.eye(n, dtype = torch.float64) - torch.ones([| n; n |], dtype = torch.float64) / float n
                let hsic (k: Tensor) (l: Tensor) = k.mm(h).mm(l).mm(h).trace().item<float>()
                let k, l = x.mm(x.t()), y.mm(y.t())
                let expected = hsic k l / sqrt (hsic k k * hsic l l)
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } (LinearCka.Biased(x, y)) expected (sprintf "n=%d p=%d q=%d" n p q)
        }
        test "CKA refuses fewer than 4 items, different item counts and non-matrix input with ArgumentException" {
            use _ = torch.NewDisposeScope()
            let g = gen 6
            Expect.throwsT<ArgumentException> (fun () -> LinearCka.Unbiased(randn g 3L 2L, randn g 3L 2L) |> ignore) "n = 3"
            Expect.throwsT<ArgumentException> (fun () -> LinearCka.Unbiased(randn g 9L 2L, randn g 8L 2L) |> ignore) "9 vs 8 rows"
            Expect.throwsT<ArgumentException> (fun () -> LinearCka.Unbiased(torch.zeros(9L), randn g 9L 2L) |> ignore) "a vector"
        }
    ]

let private spearman =
    let g = Random 7
    let values m = Array.init m (fun _ -> g.NextDouble() * 4.0 - 2.0)
    let exact what (a: float) (b: float) = Expect.floatClose { absolute = 1e-12; relative = 0.0 } a b what
    [
        test "Spearman of identical lists is 1, of a strictly increasing transform (exp) is 1, of the reversed order is −1 (within 1e-12)" {
            let a = values 500
            exact "identical" (SimilarityAgreement.SpearmanOf(a, a)) 1.0
            exact "exp" (SimilarityAgreement.SpearmanOf(a, Array.map exp a)) 1.0
            exact "reversed" (SimilarityAgreement.SpearmanOf(a, Array.map (fun v -> -v) a)) -1.0
        }
        testPropertyWithConfig { propConfig with maxTest = 30 } "Spearman with ties equals the Pearson correlation of average ranks counted naively (within 1e-12)" <| fun (seed: int) ->
            let r = Random seed
            let m = 5 + abs seed % 200
            let tied () = Array.init m (fun _ -> float (r.Next 6))            // six distinct values: many ties
            let a, b = tied (), tied ()
            if Array.distinct a |> Array.length > 1 && Array.distinct b |> Array.length > 1 then
                exact "ties" (SimilarityAgreement.SpearmanOf(a, b)) (naivePearson (naiveRanks a) (naiveRanks b))
        test "Spearman(X, X·Q) = 1 for orthogonal Q: cosine similarities are unchanged (within 1e-12)" {
            use _ = torch.NewDisposeScope()
            let tg = gen 8
            let x = randn tg 40L 6L
            exact "rotated" (SimilarityAgreement.Spearman(x, x.mm(orthogonal tg 6L))) 1.0
            let noisy = SimilarityAgreement.Spearman(x, x.add(randn tg 40L 6L))
            Expect.isLessThan noisy 0.99 "a noisy copy agrees less (so the test can fail)"
        }
        test "Spearman of a constant list is NaN (no rank variance); lists of different lengths are refused" {
            Expect.isTrue (Double.IsNaN(SimilarityAgreement.SpearmanOf([| 1.0; 1.0; 1.0 |], [| 1.0; 2.0; 3.0 |]))) "constant"
            Expect.throwsT<ArgumentException> (fun () -> SimilarityAgreement.SpearmanOf([| 1.0; 2.0 |], [| 1.0 |]) |> ignore) "lengths"
        }
    ]

let private probe =
    [
        test "the linear probe separates well-separated Gaussian clusters: validation accuracy ≥ 0.99, and of the tied λ the largest is chosen" {
            use _ = torch.NewDisposeScope()
            let g = gen 9
            let x, y = clusters g 450L 10L 3L 4.0
            let trainX, trainY, valX, valY = x.narrow(0L, 0L, 300L), y.narrow(0L, 0L, 300L), x.narrow(0L, 300L, 150L), y.narrow(0L, 300L, 150L)
            use fit = LinearProbe.Fit(trainX, trainY, valX, valY, 3)
            Expect.isGreaterThanOrEqual fit.ValidationAccuracy 0.99 (sprintf "validation accuracy %.3f (λ = %g)" fit.ValidationAccuracy fit.L2)
            Expect.isTrue (fit.Grid |> Seq.forall (fun struct (_, a) -> a = fit.ValidationAccuracy)) "every λ of the grid separates these clusters equally well"
            Expect.equal fit.L2 10.0 "so all tie, and the largest λ (the simplest model) is chosen"
        }
        test "on overlapping clusters the probe converges: ‖∇f‖∞ at the returned W, b ≤ tolerance + 1e-7 (autograd, float64; the slack covers the float32 rounding of W, b: relative 6e-8 of |W| ≲ 1, times a Hessian of order 1 on standardised features)" {
            use _ = torch.NewDisposeScope()
            let g = gen 10
            let x, y = clusters g 600L 5L 4L 0.7
            let trainX, trainY, valX, valY = x.narrow(0L, 0L, 400L), y.narrow(0L, 0L, 400L), x.narrow(0L, 400L, 200L), y.narrow(0L, 400L, 200L)
            use fit = LinearProbe.Fit(trainX, trainY, valX, valY, 4, tolerance = 1e-6)
            Expect.isTrue fit.Converged (sprintf "converged (iterations %d, λ = %g)" fit.Iterations fit.L2)
            let gradient = standardisedGradient fit trainX trainY 4L
            Expect.isLessThanOrEqual gradient (1e-6 + 1e-7) (sprintf "‖∇f‖∞ = %g" gradient)
            Expect.isLessThan fit.ValidationAccuracy 0.99 "the clusters overlap (the problem is not trivially separable)"
        }
        test "capped at 2 iterations the probe reports that it did not converge, and its gradient is far above the tolerance" {
            use _ = torch.NewDisposeScope()
            let g = gen 10
            let x, y = clusters g 600L 5L 4L 0.7
            let trainX, trainY, valX, valY = x.narrow(0L, 0L, 400L), y.narrow(0L, 0L, 400L), x.narrow(0L, 400L, 200L), y.narrow(0L, 400L, 200L)
            use fit = LinearProbe.Fit(trainX, trainY, valX, valY, 4, maxIterations = 2, tolerance = 1e-6)
            Expect.isFalse fit.Converged "not converged"
            Expect.isLessThanOrEqual fit.Iterations 2 "iterations within the cap"
            Expect.isGreaterThan (standardisedGradient fit trainX trainY 4L) 1e-4 "‖∇f‖∞ well above the tolerance"
        }
        test "the raw-space W, b predict exactly what the standardised fit predicted: Accuracy equals ValidationAccuracy and TrainAccuracy" {
            use _ = torch.NewDisposeScope()
            let g = gen 11
            let x, y = clusters g 600L 6L 3L 1.0
            let trainX, trainY, valX, valY = x.narrow(0L, 0L, 400L), y.narrow(0L, 0L, 400L), x.narrow(0L, 400L, 200L), y.narrow(0L, 400L, 200L)
            use fit = LinearProbe.Fit(trainX, trainY, valX, valY, 3)
            Expect.equal (fit.Accuracy(valX, valY)) fit.ValidationAccuracy "validation"
            Expect.equal (fit.Accuracy(trainX, trainY)) fit.TrainAccuracy "train"
            Expect.equal (fit.Weight.shape, fit.Bias.shape) ([| 3L; 6L |], [| 3L |]) "head shapes: weight [classes, d], bias [classes]"
        }
        test "the chosen λ has the grid's best validation accuracy, ties going to the larger λ; the default grid is 10^-6 … 10^1" {
            use _ = torch.NewDisposeScope()
            let g = gen 12
            let x, y = clusters g 300L 20L 3L 0.6
            let trainX, trainY, valX, valY = x.narrow(0L, 0L, 150L), y.narrow(0L, 0L, 150L), x.narrow(0L, 150L, 150L), y.narrow(0L, 150L, 150L)
            use fit = LinearProbe.Fit(trainX, trainY, valX, valY, 3)
            let best = fit.Grid |> Seq.map (fun struct (_, a) -> a) |> Seq.max
            let expected = fit.Grid |> Seq.filter (fun struct (_, a) -> a = best) |> Seq.map (fun struct (l, _) -> l) |> Seq.max
            Expect.equal fit.L2 expected "best validation accuracy, largest λ among ties"
            Expect.equal fit.ValidationAccuracy best "the reported validation accuracy is the best"
            Expect.equal (fit.Grid |> Seq.map (fun struct (l, _) -> l) |> Seq.sort |> List.ofSeq) [ for k in -6 .. 1 -> 10.0 ** float k ] "default grid"
        }
        test "the probe refuses targets outside [0, classes) with ArgumentException" {
            use _ = torch.NewDisposeScope()
            let g = gen 13
            let x = randn g 10L 3L
            let y = torch.tensor([| 0L; 1L; 2L; 0L; 1L; 2L; 0L; 1L; 2L; 3L |])
            Expect.throwsT<ArgumentException> (fun () -> LinearProbe.Fit(x, y, x, y, 3) |> ignore) "class 3 of 3"
        }
    ]

/// x → head(x), with no layer named `head`'s input other than x: a model whose layer is called `out` instead.
type private NoHead() as this =
    inherit torch.nn.Module<Tensor, Tensor>("no_head")
    let out = torch.nn.Linear(4L, 2L)
    do this.RegisterComponents()
    override _.forward x = out.call x

/// The forward pre-hooks registered on a model's `head` (TorchSharp keeps them in a private dictionary `pre_hooks`; the
/// test reads it by reflection to see that Representation.Features leaves none behind).
let private headPreHooks (model: torch.nn.Module) =
    let head = model.named_modules() |> Seq.pick (fun struct (name, m) -> if name = "head" then Some m else None)
    let field = typeof<torch.nn.Module<Tensor, Tensor>>.GetField("pre_hooks", Reflection.BindingFlags.Instance ||| Reflection.BindingFlags.NonPublic ||| Reflection.BindingFlags.Public)
    (field.GetValue head :?> Collections.ICollection).Count

let private representation =
    let mlp () =
        let model = new Mlp(6L, [| 8; 5 |], 3L)
        Init.LinearDefault(model, new torch.Generator(14UL))
        model
    let batches (x: Tensor) = [ for start in 0L .. 7L .. x.shape[0] - 1L -> Batch(x.narrow(0L, start, min 7L (x.shape[0] - start)), torch.zeros([| min 7L (x.shape[0] - start) |], dtype = torch.int64)) ]
    [
        test "Representation.Features of an Mlp equals relu(W₁ relu(W₀x + b₀) + b₁) by hand (within 1e-6, float32) and the training flag is restored" {
            use _ = torch.NewDisposeScope()
            let model = mlp ()
            model.train()
            let x = torch.randn([| 20L; 6L |], generator = gen 15)
            let features = Representation.Features(model, batches x)
            let p = model.named_parameters() |> Seq.map (fun struct (n, t) -> n, t) |> dict
            let byHand =
                use _ = torch.no_grad()
                let h = torch.nn.functional.relu(x.mm(p["layers.0.weight"].t()) + p["layers.0.bias"])
                torch.nn.functional.relu(h.mm(p["layers.1.weight"].t()) + p["layers.1.bias"])
            Expect.equal features.shape [| 20L; 5L |] "[N, d]"
            Expect.equal features.dtype torch.float32 "float32"
            Expect.isLessThanOrEqual ((features - byHand).abs().max().item<float32>()) 1e-6f "max abs difference"
            Expect.isTrue model.training "training flag restored"
            Expect.equal (headPreHooks model) 0 "the hook is removed"
            model.eval()
            Representation.Features(model, batches x) |> ignore
            Expect.isFalse model.training "eval flag restored too"
        }
        test "head(Representation.Features(cnn)) equals the Cnn's logits (within 1e-5, float32 sums over 128 features)" {
            use _ = torch.NewDisposeScope()
            let model = Cnn.Create(4L, new torch.Generator(16UL))
            let images = torch.rand([| 6L; 784L |], generator = gen 17)
            let features = Representation.Features(model, batches images)
            let head = model.named_modules() |> Seq.pick (fun struct (name, m) -> if name = "head" then Some (m :?> Modules.Linear) else None)
            use _ = torch.no_grad()
            model.eval()
            let logits = model.forward images
            Expect.equal features.shape [| 6L; 128L |] "[N, 128]: the fc layer's ReLU output"
            Expect.isLessThanOrEqual ((head.forward features - logits).abs().max().item<float32>()) 1e-5f "max abs difference"
        }
        test "Representation.Features restores the training flag when a batch throws" {
            use _ = torch.NewDisposeScope()
            let model = mlp ()
            model.train()
            let failing = seq {
                yield Batch(torch.randn(3L, 6L), torch.zeros([| 3L |], dtype = torch.int64))
                failwith "the data source broke"
            }
            Expect.throws (fun () -> Representation.Features(model, failing) |> ignore) "the failure propagates"
            Expect.isTrue model.training "training flag restored"
            Expect.equal (headPreHooks model) 0 "the hook is removed"
        }
        test "a model without a submodule named 'head' is refused with an ArgumentException naming the model type" {
            use _ = torch.NewDisposeScope()
            let model = new NoHead()
            let e = Expect.throwsC (fun () -> Representation.Features(model, [ Batch(torch.randn(2L, 4L), torch.zeros([| 2L |], dtype = torch.int64)) ]) |> ignore) id
            Expect.isTrue (e :? ArgumentException) "ArgumentException"
            Expect.stringContains e.Message "NoHead" "names the model type"
            Expect.stringContains e.Message "has no submodule named 'head'" "says what is missing"
        }
    ]

let tests = testList "probes" [ testList "cka" cka; testList "spearman" spearman; testList "linear probe" probe; testList "representation" representation ]
