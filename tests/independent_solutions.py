"""An independent solution of every assignment, written from the release text alone.

Each entry replaces one answer cell of a release notebook (by its grade id)
with code written from what that notebook states, without the solution
notebooks. The pipeline test submits it as one more student and requires every
autograded point (but those of A3's bandwidth part where grading has no GPU):
the proof that the release states everything the hidden tests check.
"""

A1 = {
    "bn_forward_code": '''
def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    features = x.shape[1]
    if "running_mean" not in bn_param:
        bn_param["running_mean"] = np.zeros(features)
    if "running_var" not in bn_param:
        bn_param["running_var"] = np.ones(features)
    if mode == "test":
        normalized = (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + eps)
        return gamma * normalized + beta, {"mode": "test"}
    if mode != "train":
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    n = x.shape[0]
    mu = np.sum(x, axis=0) / n
    centered = x - mu
    variance = np.sum(centered * centered, axis=0) / n
    std = np.sqrt(variance + eps)
    inv = 1.0 / std
    normalized = centered * inv
    bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * mu
    bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * variance
    cache = {"mode": "train", "x_hat": normalized, "xmu": centered, "var": variance, "std": std,
             "invstd": inv, "gamma": gamma, "eps": eps, "N": n}
    return gamma * normalized + beta, cache
''',
    "bn_backward_code": '''
def batchnorm_backward(dout, cache):
    n, gamma = cache["N"], cache["gamma"]
    centered, std, inv, normalized = cache["xmu"], cache["std"], cache["invstd"], cache["x_hat"]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * normalized, axis=0)
    d_normalized = dout * gamma
    d_inv = np.sum(d_normalized * centered, axis=0)
    d_centered = d_normalized * inv
    d_std = -d_inv / (std * std)
    d_variance = d_std / (2.0 * std)
    d_centered = d_centered + (2.0 / n) * centered * d_variance
    d_mu = -np.sum(d_centered, axis=0)
    dx = d_centered + d_mu / n
    return dx, dgamma, dbeta
''',
    "bn_backward_alt_code": '''
def batchnorm_backward_alt(dout, cache):
    normalized, inv, gamma = cache["x_hat"], cache["invstd"], cache["gamma"]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * normalized).sum(axis=0)
    g = dout * gamma
    dx = inv * (g - g.mean(axis=0) - normalized * (g * normalized).mean(axis=0))
    return dx, dgamma, dbeta
''',
    "spatial_bn_forward_code": '''
def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    flat = np.moveaxis(x, 1, -1).reshape(N * H * W, C)
    out, bn_cache = batchnorm_forward(flat, gamma, beta, bn_param)
    return np.moveaxis(out.reshape(N, H, W, C), -1, 1), (bn_cache, x.shape)
''',
    "spatial_bn_backward_code": '''
def spatial_batchnorm_backward(dout, cache):
    bn_cache, (N, C, H, W) = cache
    flat = np.moveaxis(dout, 1, -1).reshape(N * H * W, C)
    dx, dgamma, dbeta = batchnorm_backward(flat, bn_cache)
    return np.moveaxis(dx.reshape(N, H, W, C), -1, 1), dgamma, dbeta
''',
    "ln_code": '''
def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    d = x.shape[1]
    mu = np.sum(x, axis=1, keepdims=True) / d
    centered = x - mu
    inv = 1.0 / np.sqrt(np.sum(centered * centered, axis=1, keepdims=True) / d + eps)
    normalized = centered * inv
    return normalized * gamma + beta, (normalized, inv, gamma)


def layernorm_backward(dout, cache):
    normalized, inv, gamma = cache
    d = normalized.shape[1]
    g = dout * gamma
    dx = inv / d * (d * g - g.sum(axis=1, keepdims=True) - normalized * (g * normalized).sum(axis=1, keepdims=True))
    return dx, (dout * normalized).sum(axis=0), dout.sum(axis=0)
''',
    "questions_code": '''
answer_single_example = "b"   # x - mean is 0, so x_hat is 0 and out is beta
answer_scaled_input = "b"     # x_hat does not change, so d out / dx shrinks by a
answer_dx_sum = "a"
''',
}

A2 = {
    "bn_function_code": '''
class BatchNorm2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mu = x.sum(dim=(0, 2, 3), keepdim=True) / count
        centered = x - mu
        var = (centered * centered).sum(dim=(0, 2, 3), keepdim=True) / count
        invstd = 1.0 / torch.sqrt(var + eps)
        x_hat = centered * invstd
        ctx.save_for_backward(x_hat, invstd, weight)
        return x_hat * weight[None, :, None, None] + bias[None, :, None, None]

    @staticmethod
    def backward(ctx, dout):
        x_hat, invstd, weight = ctx.saved_tensors
        dbias = dout.sum(dim=(0, 2, 3))
        dweight = (dout * x_hat).sum(dim=(0, 2, 3))
        g = dout * weight[None, :, None, None]
        dx = invstd * (g - g.mean(dim=(0, 2, 3), keepdim=True)
                       - x_hat * (g * x_hat).mean(dim=(0, 2, 3), keepdim=True))
        return dx, dweight, dbias, None
''',
    "bn_module_code": '''
class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                count = x.numel() // x.shape[1]
                mu = x.mean(dim=(0, 2, 3))
                unbiased = ((x - mu[None, :, None, None]) ** 2).sum(dim=(0, 2, 3)) / (count - 1)
                self.running_mean.copy_((1 - self.momentum) * self.running_mean + self.momentum * mu)
                self.running_var.copy_((1 - self.momentum) * self.running_var + self.momentum * unbiased)
                self.num_batches_tracked.add_(1)
            return BatchNorm2dFunction.apply(x, self.weight, self.bias, self.eps)
        shape = (1, -1, 1, 1)
        x_hat = (x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)
''',
    "population_statistics_code": '''
def population_statistics(features, loader):
    shift, s1, s2, count = None, 0.0, 0.0, 0
    with torch.no_grad():
        for x, _ in loader:
            a = features(x).double()
            a = a.transpose(0, 1).reshape(a.shape[1], -1)          # C, values
            if shift is None:
                shift = a.mean(dim=1, keepdim=True)                 # keeps the sums small
            a = a - shift
            s1 = s1 + a.sum(dim=1)
            s2 = s2 + (a * a).sum(dim=1)
            count += a.shape[1]
    mean = shift.squeeze(1) + s1 / count
    var = (s2 - s1 * s1 / count) / (count - 1)
    return mean, var
''',
    "fold_code": '''
def fold_linear_bn(linear, bn):
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var.detach() + bn.eps)
    old_bias = linear.bias.detach() if linear.bias is not None else torch.zeros_like(scale)
    new = nn.Linear(linear.in_features, linear.out_features).to(dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight.detach() * scale[:, None])
        new.bias.copy_(scale * (old_bias - bn.running_mean) + bn.bias.detach())
    return new


def fold_conv_bn(conv, bn):
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var.detach() + bn.eps)
    new = copy.deepcopy(conv)   # keeps kernel size, stride, padding, dilation, groups
    old_bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    if new.bias is None:
        new.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
    with torch.no_grad():
        new.weight.mul_(scale[:, None, None, None])
        new.bias.copy_(scale * (old_bias - bn.running_mean) + bn.bias.detach())
    return new
''',
    "digits_experiment_code": '''
def compare_statistics(model, X, y, batch_size):
    frozen = copy.deepcopy(model)
    frozen.eval()
    live = copy.deepcopy(model)
    live.train()
    return accuracy(frozen, X, y), accuracy(live, X, y, batch_size=batch_size)
''',
    "questions_code": '''
answer_momentum = "b"       # 0.9 * (0.1 * m1) + 0.1 * m2
answer_single_image = "b"   # 64 values per channel: no error in BatchNorm2d
''',
}

A3 = {
    "bn_stats_code": '''
@triton.jit
def bn_stats_kernel(x_ptr, mean_ptr, var_ptr, N, C, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    total = tl.zeros([BLOCK_C], tl.float32)
    for start in range(0, N, BLOCK_N):           # first read: the mean
        r = start + tl.arange(0, BLOCK_N)
        m = (r[:, None] < N) & c_ok[None, :]
        total += tl.sum(tl.load(x_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0), axis=0)
    mu = total / N
    squares = tl.zeros([BLOCK_C], tl.float32)
    for start in range(0, N, BLOCK_N):           # second read: centred squares
        r = start + tl.arange(0, BLOCK_N)
        m = (r[:, None] < N) & c_ok[None, :]
        v = tl.load(x_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        d = tl.where(m, v - mu[None, :], 0.0)
        squares += tl.sum(d * d, axis=0)
    tl.store(mean_ptr + c, mu, mask=c_ok)
    tl.store(var_ptr + c, squares / N, mask=c_ok)


def bn_stats(x):
    N, C = x.shape
    mean = torch.empty(C, device=x.device, dtype=torch.float32)
    var = torch.empty_like(mean)
    bn_stats_kernel[(triton.cdiv(C, 16),)](x, mean, var, N, C, BLOCK_N=32, BLOCK_C=16)
    return mean, var
''',
    "bn_forward_code": '''
@triton.jit
def bn_forward_kernel(x_ptr, y_ptr, mean_ptr, var_ptr, gamma_ptr, beta_ptr, invstd_ptr, eps, N, C,
                      BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    r = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = c < C
    mu = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    inv = 1.0 / tl.sqrt(tl.load(var_ptr + c, mask=c_ok, other=1.0) + eps)
    g = tl.load(gamma_ptr + c, mask=c_ok, other=1.0)
    b = tl.load(beta_ptr + c, mask=c_ok, other=0.0)
    tl.store(invstd_ptr + c, inv, mask=c_ok & (tl.program_id(1) == 0))
    m = (r[:, None] < N) & c_ok[None, :]
    where = r[:, None] * C + c[None, :]
    v = tl.load(x_ptr + where, mask=m, other=0.0)
    tl.store(y_ptr + where, (v - mu[None, :]) * inv[None, :] * g[None, :] + b[None, :], mask=m)


def bn_forward(x, gamma, beta, eps=1e-5):
    N, C = x.shape
    mean, var = bn_stats(x)
    y = torch.empty_like(x)
    invstd = torch.empty_like(mean)
    grid = (triton.cdiv(C, 16), triton.cdiv(N, 32))
    bn_forward_kernel[grid](x, y, mean, var, gamma, beta, invstd, eps, N, C, BLOCK_N=32, BLOCK_C=16)
    return y, mean, invstd
''',
    "bn_backward_code": '''
@triton.jit
def bn_backward_kernel(dy_ptr, x_ptr, dx_ptr, gamma_ptr, mean_ptr, invstd_ptr, dgamma_ptr, dbeta_ptr, N, C,
                       BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # The two per-channel sums; dx comes from bn_dx_kernel once they are known.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mu = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    inv = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    sum_dy = tl.zeros([BLOCK_C], tl.float32)
    sum_dy_xhat = tl.zeros([BLOCK_C], tl.float32)
    for start in range(0, N, BLOCK_N):
        r = start + tl.arange(0, BLOCK_N)
        m = (r[:, None] < N) & c_ok[None, :]
        where = r[:, None] * C + c[None, :]
        g = tl.load(dy_ptr + where, mask=m, other=0.0)
        xh = (tl.load(x_ptr + where, mask=m, other=0.0) - mu[None, :]) * inv[None, :]
        sum_dy += tl.sum(g, axis=0)
        sum_dy_xhat += tl.sum(tl.where(m, g * xh, 0.0), axis=0)
    tl.store(dbeta_ptr + c, sum_dy, mask=c_ok)
    tl.store(dgamma_ptr + c, sum_dy_xhat, mask=c_ok)


@triton.jit
def bn_dx_kernel(dy_ptr, x_ptr, dx_ptr, gamma_ptr, mean_ptr, invstd_ptr, dgamma_ptr, dbeta_ptr, N, C,
                 BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    r = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = c < C
    mu = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    inv = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    gam = tl.load(gamma_ptr + c, mask=c_ok, other=0.0)
    db = tl.load(dbeta_ptr + c, mask=c_ok, other=0.0)
    dg = tl.load(dgamma_ptr + c, mask=c_ok, other=0.0)
    m = (r[:, None] < N) & c_ok[None, :]
    where = r[:, None] * C + c[None, :]
    g = tl.load(dy_ptr + where, mask=m, other=0.0)
    xh = (tl.load(x_ptr + where, mask=m, other=0.0) - mu[None, :]) * inv[None, :]
    dx = (gam * inv)[None, :] * (g - db[None, :] / N - xh * dg[None, :] / N)
    tl.store(dx_ptr + where, dx, mask=m)


def bn_backward(dy, x, gamma, mean, invstd):
    N, C = x.shape
    dx = torch.empty_like(x)
    dgamma = torch.empty_like(gamma)
    dbeta = torch.empty_like(gamma)
    args = (dy, x, dx, gamma, mean, invstd, dgamma, dbeta, N, C)
    bn_backward_kernel[(triton.cdiv(C, 16),)](*args, BLOCK_N=32, BLOCK_C=16)
    bn_dx_kernel[(triton.cdiv(C, 16), triton.cdiv(N, 32))](*args, BLOCK_N=32, BLOCK_C=16)
    return dx, dgamma, dbeta
''',
}

SOURCES = {"a1_batchnorm_numpy": A1, "a2_test_time_inference": A2, "a3_triton_batchnorm": A3}


def changes(assignment):
    """The pipeline test's changes: replace each answer cell with the code above."""
    return [(grade_id, None, source.strip("\n")) for grade_id, source in SOURCES[assignment].items()]
