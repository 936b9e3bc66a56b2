// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ModelRegistry
/// @notice Model id -> (owner, profile id, metadata URI). Anyone may register an unused model id
/// and becomes its owner; only the owner may update the profile or hand the model over.
/// Results are committed against the profile that is current at commit time.
contract ModelRegistry {
    struct Model {
        address owner;
        bytes32 profileId;
        string uri;
    }

    mapping(bytes32 => Model) private _models;

    event ModelRegistered(bytes32 indexed modelId, address indexed owner, bytes32 profileId, string uri);
    event ProfileUpdated(bytes32 indexed modelId, bytes32 profileId, string uri);
    event ModelTransferred(bytes32 indexed modelId, address indexed previousOwner, address indexed newOwner);

    error ModelExists(bytes32 modelId);
    error UnknownModel(bytes32 modelId);
    error NotModelOwner(bytes32 modelId, address caller);
    error ZeroId();
    error ZeroAddress();

    function registerModel(bytes32 modelId, bytes32 profileId, string calldata uri) external {
        if (modelId == bytes32(0) || profileId == bytes32(0)) revert ZeroId();
        if (_models[modelId].owner != address(0)) revert ModelExists(modelId);
        _models[modelId] = Model(msg.sender, profileId, uri);
        emit ModelRegistered(modelId, msg.sender, profileId, uri);
    }

    function updateProfile(bytes32 modelId, bytes32 profileId, string calldata uri) external {
        Model storage m = _owned(modelId);
        if (profileId == bytes32(0)) revert ZeroId();
        m.profileId = profileId;
        m.uri = uri;
        emit ProfileUpdated(modelId, profileId, uri);
    }

    function transferModel(bytes32 modelId, address newOwner) external {
        Model storage m = _owned(modelId);
        if (newOwner == address(0)) revert ZeroAddress();
        m.owner = newOwner;
        emit ModelTransferred(modelId, msg.sender, newOwner);
    }

    function ownerOf(bytes32 modelId) external view returns (address) {
        return _models[modelId].owner;
    }

    /// @notice The current profile id of a model; zero when the model is unknown.
    function profileOf(bytes32 modelId) external view returns (bytes32) {
        return _models[modelId].profileId;
    }

    function uriOf(bytes32 modelId) external view returns (string memory) {
        return _models[modelId].uri;
    }

    function _owned(bytes32 modelId) private view returns (Model storage m) {
        m = _models[modelId];
        if (m.owner == address(0)) revert UnknownModel(modelId);
        if (m.owner != msg.sender) revert NotModelOwner(modelId, msg.sender);
    }
}
