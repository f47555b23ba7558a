using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Research.Core.Models;

/// <summary>
/// A ResNet of basic blocks (He et al. 2016, "Deep Residual Learning for Image Recognition"): stem 7×7/2 conv → BN →
/// ReLU → 3×3/2 max-pool, four stages of blocks of widths 64/128/256/512 (the first block of stages 2–4 halves the
/// resolution and projects its shortcut with a 1×1/2 conv and BN), global average pool → features [B, 512], and an
/// optional linear head → logits [B, classes]. Input: [B, 3, S, S] with S a multiple of 32 (see <see cref="ResNetInput"/>
/// for what the published weights expect).
/// </summary>
/// <remarks>
/// <para>Parameter and buffer names are torchvision's: <c>conv1.weight</c>, <c>bn1.{weight, bias, running_mean,
/// running_var, num_batches_tracked}</c>, <c>layer{s}.{b}.conv{1,2}.weight</c>, <c>layer{s}.{b}.bn{1,2}.*</c>,
/// <c>layer{s}.0.downsample.{0,1}.*</c> (s = 2…4), <c>head.{weight, bias}</c>. The running statistics are buffers,
/// so <see cref="nn.Module.state_dict"/> and the checkpoint writer carry them.</para>
/// <para>Padding is CNTK's, not torchvision's: the file this model reads (<see cref="ResNetOnnx"/>) pads the stem 3
/// rows/columns on the top/left and 2 on the bottom/right, and the max-pool and the stride-2 3×3 convolutions 1 on the
/// top/left and none on the bottom/right. Explicit pads before unpadded convolutions reproduce that exactly. At sides
/// that are multiples of 32 every strided layer sees an even size, and the windows then cover the same pixels as
/// torchvision's symmetric padding; at other sizes the main path and the 1×1 shortcut would disagree in size, so they
/// are refused.</para>
/// <para>The final pool is global: the CNTK file averages a fixed 7×7 window, which is the whole map at 224 px (equal
/// there). At 64 px the last map is 2×2 and the features average those 4 positions; a fixed 7×7 window would not fit.</para>
/// <para>BatchNorm: in training mode each layer normalises with the batch's statistics and moves its running ones
/// (r ← (1 − 0.1)·r + 0.1·batch, PyTorch's momentum); in eval mode it normalises with the running ones.
/// <see cref="FreezeBatchNormStatistics"/> keeps every BatchNorm layer in eval mode while the rest trains (its scale
/// and shift still learn) — the usual choice when fine-tuning on small batches or on data far from ImageNet's.</para>
/// </remarks>
public sealed class ResNet : nn.Module<Tensor, Tensor>
{
    /// <summary>torchvision's ResNet-18: two basic blocks per stage.</summary>
    public static IReadOnlyList<int> ResNet18Blocks { get; } = [2, 2, 2, 2];

    /// <summary>The published CNTK "ResNet18" (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18): a third block in the last
    /// stage, 15.9 M numbers where torchvision's ResNet-18 trunk has 11.2 M.</summary>
    public static IReadOnlyList<int> CntkResNet18Blocks { get; } = [2, 2, 2, 3];

    /// <summary>Stage widths; the features are <see cref="FeatureWidth"/> wide.</summary>
    public static IReadOnlyList<long> Widths { get; } = [64, 128, 256, 512];

    public const long FeatureWidth = 512;

    /// <summary>Input sides must be multiples of this (five halvings, each of an even size).</summary>
    public const long SideMultiple = 32;

    readonly Conv2d conv1;
    readonly BatchNorm2d bn1;
    readonly ModuleList<BasicBlock> layer1 = new(), layer2 = new(), layer3 = new(), layer4 = new();
    readonly Linear? head;
    bool freezeBatchNormStatistics;

    /// <summary>Basic blocks per stage.</summary>
    public IReadOnlyList<int> Blocks { get; }

    /// <summary>Classes of the head; 0 when the model outputs its features.</summary>
    public long Classes { get; }

    /// <summary>
    /// Builds the modules (values from the process-global generator: call <see cref="Initialise"/> or load weights).
    /// </summary>
    /// <param name="blocks">Basic blocks in each of the four stages (<see cref="ResNet18Blocks"/>, <see cref="CntkResNet18Blocks"/>).</param>
    /// <param name="classes">Outputs of the linear head on the pooled features; 0 for none (the output is then the features).</param>
    public ResNet(IReadOnlyList<int> blocks, long classes = 0) : base("resnet")
    {
        if (blocks.Count != 4 || blocks.Any(b => b < 1))
            throw new ArgumentException($"a ResNet has four stages of at least one block each, not [{string.Join(", ", blocks)}]");
        if (classes < 0) throw new ArgumentException($"classes must be ≥ 0 (0: no head), not {classes}");
        Blocks = blocks.ToArray();
        Classes = classes;
        conv1 = nn.Conv2d(3, Widths[0], kernel_size: 7, stride: 2, bias: false);
        bn1 = nn.BatchNorm2d(Widths[0], eps: ResNetOnnx.BatchNormEpsilon);
        ModuleList<BasicBlock>[] stages = [layer1, layer2, layer3, layer4];
        var inputs = Widths[0];
        for (var s = 0; s < 4; s++)
            for (var b = 0; b < blocks[s]; b++)
            {
                stages[s].Add(new BasicBlock(inputs, Widths[s], stride: s > 0 && b == 0 ? 2 : 1));
                inputs = Widths[s];
            }
        if (classes > 0) head = nn.Linear(FeatureWidth, classes);
        RegisterComponents();
    }

    /// <summary>A model initialised from <paramref name="generator"/> alone (see <see cref="Initialise"/>).</summary>
    public static ResNet Create(IReadOnlyList<int> blocks, long classes, Generator generator)
    {
        var model = new ResNet(blocks, classes);
        model.Initialise(generator);
        return model;
    }

    /// <summary>
    /// The pre-trained ResNet in an ONNX file (<see cref="ResNetOnnx"/>; the stage layout is the file's), with a new head
    /// of <paramref name="classes"/> outputs drawn from <paramref name="generator"/> (none when 0).
    /// </summary>
    public static ResNet FromOnnx(string path, long classes, Generator generator)
    {
        using var weights = ResNetOnnx.Read(path);
        var model = Create(weights.Blocks, classes, generator);
        try { model.LoadPretrained(weights.Tensors, path, weights.Origins); }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>
    /// From-scratch initialisation, every draw from <paramref name="generator"/> (never the process-global RNG), in module
    /// order: convolutions N(0, 2/fan_out) with fan_out = out_channels·k² (torchvision's kaiming_normal_, mode fan_out),
    /// BatchNorm scale 1, shift 0, running mean 0, variance 1, count 0; the head PyTorch's Linear default
    /// U(±1/√fan_in) (<see cref="Init.LinearDefault"/>).
    /// </summary>
    public void Initialise(Generator generator)
    {
        using (var _ = NewDisposeScope())
        using (var __ = no_grad())
            foreach (var (_, m) in named_modules())
            {
                if (m is Conv2d conv)
                {
                    var w = conv.weight!;
                    var fanOut = w.shape[0] * w.shape[2] * w.shape[3];
                    w.copy_(randn(w.shape, generator: generator).mul_(Math.Sqrt(2.0 / fanOut)));
                }
                else if (m is BatchNorm2d bn) bn.reset_parameters();
            }
        if (head is not null) Init.LinearDefault(this, generator, ["head"]);
    }

    /// <summary>
    /// Copies pre-trained tensors, by name, into every parameter and buffer of the trunk (all but the head). The BatchNorm
    /// counts (<c>num_batches_tracked</c>) are optional: a file of running statistics such as the CNTK export has none, and
    /// PyTorch's fixed momentum does not read them. All or nothing: a name the trunk needs and the tensors lack, a tensor
    /// of another shape, or a tensor the trunk has no place for (a head's included) is an error that lists every such name
    /// (with its <paramref name="origins"/> entry, e.g. the ONNX initializer, when given), and nothing is changed.
    /// </summary>
    public void LoadPretrained(IReadOnlyDictionary<string, Tensor> tensors, string source, IReadOnlyDictionary<string, string>? origins = null)
    {
        string Named(string key) => origins is not null && origins.TryGetValue(key, out var o) ? $"{key} ({o})" : key;
        static string Shape(Tensor t) => "[" + string.Join("×", t.shape) + "]";
        static bool Trunk(string key) => !key.StartsWith("head.");
        static bool Required(string key) => Trunk(key) && !key.EndsWith(".num_batches_tracked");
        var own = state_dict();
        var missing = own.Keys.Where(k => Required(k) && !tensors.ContainsKey(k)).ToList();
        var mismatch = own.Keys.Where(k => Trunk(k) && tensors.TryGetValue(k, out var t) && !t.shape.SequenceEqual(own[k].shape))
            .Select(k => $"{Named(k)}: model {Shape(own[k])}, file {Shape(tensors[k])}").ToList();
        var unexpected = tensors.Keys.Where(k => !own.ContainsKey(k) || !Trunk(k)).Select(Named).ToList();
        if (missing.Count > 0 || mismatch.Count > 0 || unexpected.Count > 0)
        {
            var problems = new List<string>();
            if (missing.Count > 0) problems.Add($"missing [{string.Join(", ", missing)}]");
            if (mismatch.Count > 0) problems.Add($"shape mismatch [{string.Join("; ", mismatch)}]");
            if (unexpected.Count > 0) problems.Add($"unexpected [{string.Join(", ", unexpected)}]");
            throw new InvalidDataException($"{source}: the weights do not fit ResNet [{string.Join(", ", Blocks)}]: {string.Join("; ", problems)}");
        }
        using var _ = no_grad();
        foreach (var (key, target) in own)
            if (Trunk(key) && tensors.TryGetValue(key, out var value)) target.copy_(value.to(target.dtype));
    }

    /// <summary>
    /// When set, every BatchNorm layer stays in eval mode while the model trains: it normalises with its running statistics
    /// and leaves them unchanged; its scale and shift still receive gradients. Takes effect at once and on every later
    /// <see cref="train"/> call.
    /// </summary>
    public bool FreezeBatchNormStatistics
    {
        get => freezeBatchNormStatistics;
        set { freezeBatchNormStatistics = value; train(training); }
    }

    public override void train(bool on = true)
    {
        base.train(on);
        if (on && freezeBatchNormStatistics)
            foreach (var (_, m) in named_modules())
                if (m is BatchNorm2d bn) bn.eval();
    }

    /// <summary>
    /// When set (&gt; 0), flat grey images [B, 784] — the repository's standardised Fashion-MNIST features — are accepted and
    /// turned into the published model's input at this side (<see cref="ResNetInput.FromFashionMnist"/>) inside the
    /// model, so the data stays 784 numbers per image rather than 3·S² (12,288 at 64 px).
    /// </summary>
    public long GreyInputSide { get; set; }

    /// <summary>The pooled features [B, <see cref="FeatureWidth"/>] of images [B, 3, S, S] (or flat grey images, see <see cref="GreyInputSide"/>).</summary>
    public Tensor Features(Tensor images)
    {
        if (images.dim() == 2 && GreyInputSide > 0)
        {
            using var scope = NewDisposeScope();
            return Features(ResNetInput.FromFashionMnist(images, GreyInputSide)).MoveToOuterDisposeScope();
        }
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new ArgumentException($"a ResNet reads images [B, 3, H, W], not [{string.Join(", ", images.shape)}]");
        var (h, w) = (images.shape[2], images.shape[3]);
        if (h % SideMultiple != 0 || w % SideMultiple != 0)
            throw new ArgumentException($"image sides must be multiples of {SideMultiple} (CNTK's top/left padding would give the main path and the shortcut different sizes), not {h}×{w}");
        // F.pad's order is (left, right, top, bottom).
        var x = F.relu(bn1.call(conv1.call(F.pad(images, [3, 2, 3, 2]))));
        // −∞, not 0: a padded position never wins the max (ONNX MaxPool ignores its pads).
        x = F.max_pool2d(F.pad(x, [1, 0, 1, 0], value: double.NegativeInfinity), [3, 3], [2, 2]);
        foreach (var stage in new[] { layer1, layer2, layer3, layer4 })
            foreach (var block in stage) x = block.call(x);
        return x.mean([2, 3]);
    }

    /// <summary>Logits [B, classes] with a head, else the features (<see cref="Features"/>).</summary>
    public override Tensor forward(Tensor images)
    {
        var features = Features(images);
        return head is null ? features : head.call(features);
    }
}

/// <summary>
/// A basic block: y = ReLU(BN₂(conv₂(ReLU(BN₁(conv₁(x))))) + shortcut(x)), both convolutions 3×3; with stride 2 the
/// first halves the resolution (CNTK's padding: 1 on the top/left, none on the bottom/right) and the shortcut is a 1×1/2
/// conv and BN (<c>downsample.0</c>, <c>downsample.1</c>); else the shortcut is x.
/// </summary>
public sealed class BasicBlock : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv1;
    readonly BatchNorm2d bn1;
    readonly Conv2d conv2;
    readonly BatchNorm2d bn2;
    readonly Sequential? downsample;
    readonly long stride;

    public BasicBlock(long inputs, long width, long stride) : base("block")
    {
        if (stride is not (1 or 2)) throw new ArgumentException($"a basic block's stride is 1 or 2, not {stride}");
        if (stride == 1 && inputs != width) throw new ArgumentException($"a stride-1 block keeps its width ({inputs} → {width} needs a projection)");
        this.stride = stride;
        conv1 = nn.Conv2d(inputs, width, kernel_size: 3, stride: stride, padding: stride == 1 ? 1 : 0, bias: false);
        bn1 = nn.BatchNorm2d(width, eps: ResNetOnnx.BatchNormEpsilon);
        conv2 = nn.Conv2d(width, width, kernel_size: 3, padding: 1, bias: false);
        bn2 = nn.BatchNorm2d(width, eps: ResNetOnnx.BatchNormEpsilon);
        if (stride == 2)
            downsample = nn.Sequential(nn.Conv2d(inputs, width, kernel_size: 1, stride: 2, bias: false),
                nn.BatchNorm2d(width, eps: ResNetOnnx.BatchNormEpsilon));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var y = stride == 1 ? x : F.pad(x, [1, 0, 1, 0]);
        y = F.relu(bn1.call(conv1.call(y)));
        y = bn2.call(conv2.call(y));
        return F.relu(y.add(downsample is null ? x : downsample.call(x)));
    }
}
