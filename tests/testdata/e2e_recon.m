function e2e_recon(input_dir, varargin)
% E2E_RECON  RECON_SCRIPT for the Matlab-style end-to-end test: writes the input
% directory and the 'key','value' option pairs it was called with into
% RECON_OUTPUT_DIR/matlab_args.txt. (With the stub MATLAB_COMMAND of the tests it
% is never run; with a real Matlab or Octave it is.)
out = getenv('RECON_OUTPUT_DIR');
fid = fopen(fullfile(out, 'matlab_args.txt'), 'w');
fprintf(fid, 'input_dir %s\n', input_dir);
for i = 1:2:numel(varargin)
  fprintf(fid, 'option %s=%s\n', varargin{i}, varargin{i + 1});
end
fclose(fid);
end
