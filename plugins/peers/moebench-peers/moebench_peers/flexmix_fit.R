# EM for a mixture of linear-Gaussian experts with a multinomial-logit gate (flexmix).
# Usage: Rscript flexmix_fit.R data.csv init_posterior.csv iter_max out.txt
# data.csv: columns x_1..x_d, y (no header); init_posterior.csv: n x k start posteriors.
# Experts y ~ 0 + x (per-component sigma), gate ~ 0 + x (nnet::multinom), minprior = 0.
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages(library(flexmix))
D <- as.matrix(read.csv(args[1], header = FALSE))
R0 <- as.matrix(read.csv(args[2], header = FALSE))
iters <- as.integer(args[3])
k <- ncol(R0)
d <- ncol(D) - 1
df <- data.frame(y = D[, d + 1])
df$X <- D[, 1:d, drop = FALSE]
t0 <- proc.time()[["elapsed"]]
fit <- flexmix(y ~ 0 + X, data = df, k = k, cluster = R0,
               model = FLXMRglm(family = "gaussian"),
               concomitant = FLXPmultinom(~ 0 + X),
               control = list(iter.max = iters, minprior = 0, tolerance = 0, verbose = 0))
elapsed <- proc.time()[["elapsed"]] - t0
out <- c(sprintf("elapsed %.17g", elapsed), sprintf("iterations %d", fit@iter),
         sprintf("loglik %.17g", as.numeric(logLik(fit))), sprintf("k %d", fit@k),
         paste("experts", paste(sprintf("%.17g", as.vector(parameters(fit))), collapse = " ")),
         paste("gate", paste(sprintf("%.17g",
               as.vector(parameters(fit, which = "concomitant"))), collapse = " ")))
writeLines(out, args[4])
