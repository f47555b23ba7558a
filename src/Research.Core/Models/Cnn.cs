using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Research.Core.Models;

/// <summary>
/// A small convolutional network for 28×28 grey images (Fashion-MNIST): conv 3×3 (1 → 32, padded) → ReLU → 2×2 max-pool
/// → conv 3×3 (32 → 64, padded) → ReLU → 2×2 max-pool → flatten (64·7·7 = 3,136) → fc (128) → ReLU → head (classes).
/// Input: [B, 1, 28, 28], or the flat features [B, 784] of <see cref="Data.FashionMnist"/> (rows of 28 pixels), which are
/// reshaped. Parameters: <c>conv1.{weight,bias}</c>, <c>conv2.*</c>, <c>fc.*</c>, <c>head.*</c> —
/// 320 + 18,496 + 401,536 + 129·classes (421,642 for 10 classes).
/// </summary>
public sealed class Cnn : nn.Module<Tensor, Tensor>
{
    public const long Side = 28;

    readonly Conv2d conv1;
    readonly Conv2d conv2;
    readonly Linear fc;
    readonly Linear head;

    /// <summary>Builds the modules (values from the process-global generator: call <see cref="Init.LinearDefault"/>, or use <see cref="Create"/>).</summary>
    public Cnn(long classes) : base("cnn")
    {
        if (classes < 1) throw new ArgumentException($"a classifier needs at least one class, not {classes}");
        conv1 = nn.Conv2d(1, 32, kernel_size: 3, padding: 1);
        conv2 = nn.Conv2d(32, 64, kernel_size: 3, padding: 1);
        fc = nn.Linear(64 * (Side / 4) * (Side / 4), 128);
        head = nn.Linear(128, classes);
        RegisterComponents();
    }

    /// <summary>A network whose every parameter is drawn from <paramref name="generator"/>: PyTorch's default for each
    /// layer, U(±1/√fan_in) (<see cref="Init.LinearDefault"/>).</summary>
    public static Cnn Create(long classes, Generator generator)
    {
        var model = new Cnn(classes);
        Init.LinearDefault(model, generator);
        return model;
    }

    public override Tensor forward(Tensor x)
    {
        if (x.dim() == 2 && x.shape[1] == Side * Side) x = x.view(-1, 1, Side, Side);
        if (x.dim() != 4 || x.shape[1] != 1 || x.shape[2] != Side || x.shape[3] != Side)
            throw new ArgumentException($"the CNN reads [B, 1, {Side}, {Side}] or [B, {Side * Side}], not [{string.Join(", ", x.shape)}]");
        x = F.max_pool2d(F.relu(conv1.call(x)), 2);
        x = F.max_pool2d(F.relu(conv2.call(x)), 2);
        // call (not forward) runs forward hooks, which the Fisher estimators use on Linear layers.
        x = F.relu(fc.call(x.flatten(1)));
        return head.call(x);
    }
}
